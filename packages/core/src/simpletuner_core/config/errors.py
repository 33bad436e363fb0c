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


def _tokens(key: str) -> list[str]:
    return [t for t in key.lower().split("_") if t]


def _token_match(token: str, others: list[str]) -> bool:
    return any(token == o or difflib.SequenceMatcher(None, token, o).ratio() >= 0.8 for o in others)


def suggest_key(word: str, candidates: Iterable[str]) -> str | None:
    """A config key close to ``word`` in spelling *and* meaning: most of their ``_``-separated words must match.

    Plain string similarity pairs keys that merely share a suffix (``grad_clip_method`` and ``validation_method``);
    requiring the words to agree keeps typos (``learning_rat``) and drops those.
    """
    mine = _tokens(word)
    if not mine:
        return None
    scored = []
    for cand in dict.fromkeys(candidates):
        theirs = _tokens(cand)
        shared = sum(_token_match(t, theirs) for t in mine)
        back = sum(_token_match(t, mine) for t in theirs)
        if shared * 2 < len(mine) + 1 or back * 2 < len(theirs) + 1:
            continue  # less than half the words (rounded up) agree in either direction
        ratio = difflib.SequenceMatcher(None, word.lower(), cand.lower()).ratio()
        if ratio >= 0.6:
            scored.append((ratio, cand))
    return max(scored)[1] if scored else None
