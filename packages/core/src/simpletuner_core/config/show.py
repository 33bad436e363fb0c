"""The effective configuration: every key's value and where it came from (``simpletuner config show``).

A SimpleTuner config that omits a key runs with a default; one that uses an old name is migrated; ``--set`` wins
over both. Showing the source of every value is what lets a user see why a run behaved as it did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simpletuner_core.config.migrations import overlay, rename_aliases
from simpletuner_core.config.model import strip_dashes, unstructure
from simpletuner_core.config.rules import validate

SOURCES = ("file", "default", "override")  # plus "alias:OLD_NAME"


def effective(given: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
              registry: Any | None = None) -> dict[str, dict[str, Any]]:
    """``{key: {"value": V, "source": S}}`` for every key of the validated config.

    ``given`` is the config as saved (``--key`` or bare keys); ``overrides`` are ``--set`` values applied on top.
    Raises :class:`~simpletuner_core.config.errors.ConfigInvalid` like :func:`validate`.
    """
    file_keys = strip_dashes(given)
    extra = strip_dashes(overrides or {})
    cfg = validate(overlay(file_keys, extra), registry)
    _, renamed_in_file = rename_aliases(file_keys)
    _, renamed_in_overrides = rename_aliases(extra)
    out: dict[str, dict[str, Any]] = {}
    for key, value in unstructure(cfg).items():
        if key in extra or key in renamed_in_overrides:
            source = "override"
        elif key in renamed_in_file:
            source = f"alias:{renamed_in_file[key]}"
        elif key in file_keys:
            source = "file"
        else:
            source = "default"
        out[key] = {"value": value, "source": source}
    return out


def render(table: Mapping[str, Mapping[str, Any]]) -> str:
    """Aligned ``key  value  (source)`` lines for a terminal."""
    width = max((len(k) for k in table), default=0)
    lines = []
    for key in sorted(table):
        entry = table[key]
        lines.append(f"{key.ljust(width)}  {entry['value']!r}  ({entry['source']})")
    return "\n".join(lines) + "\n"
