"""Config errors as data: ``{path, message, did_you_mean}``, never a bare "validation failed"."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import attrs


@attrs.frozen
class ConfigError:
    path: str
    message: str
    did_you_mean: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return attrs.asdict(self)

    def __str__(self) -> str:
        hint = f" (did you mean {self.did_you_mean!r}?)" if self.did_you_mean else ""
        return f"{self.path}: {self.message}{hint}"


class ConfigInvalid(ValueError):
    """Raised with every problem found, not just the first."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid configuration")


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    hits = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return hits[0] if hits else None
