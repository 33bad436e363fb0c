"""SimpleTuner's config keys: every one of them known here, each with one status.

A SimpleTuner user's ``config.json`` must load unchanged, so no key of SimpleTuner's registry
(``simpletuner_keys.tsv``) is ever "unknown". Each key is exactly one of:

- ``implemented``: one of our config fields (core or a family plugin's), same name and meaning;
- ``alias``: an old name migrated to one of ours (``config/migrations.py``);
- ``inert``: no effect on a PixArt Sigma or Flux run (another model family's key, a UI or platform knob);
  accepted and named once in a warning;
- ``unsupported``: a feature this project does not have; accepted at its off value (``false``, ``null``, ``0``,
  empty, SimpleTuner's default) and refused with the reason when it asks for the feature.

The classification data lives in :mod:`simpletuner_core.config.compat_status`.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from simpletuner_core.config import compat_status as cs
from simpletuner_core.config.errors import ConfigError
from simpletuner_core.config.migrations import ALIASES, INVERSE_ALIASES

TABLE = Path(__file__).with_name("simpletuner_keys.tsv")
STATUSES = ("implemented", "alias", "inert", "unsupported")
#: Families of ours, in SimpleTuner's spelling of their ``model_specific`` lists.
OUR_FAMILIES = frozenset({"pixart", "pixart_sigma", "flux"})


@attrs.frozen
class PeerKey:
    """One row of SimpleTuner's field registry."""

    name: str
    type: str
    tab: str
    section: str
    default: str
    choices: str
    importance: str
    families: tuple[str, ...]


@attrs.frozen
class KeyStatus:
    status: str  # one of STATUSES
    detail: str  # implemented: ""; alias: the current key; inert / unsupported: the reason


@attrs.frozen
class Triage:
    """A bare-key config split into what structuring sees, what was refused, and what has no effect."""

    kept: dict[str, Any]
    errors: list[ConfigError]
    inert: dict[str, str]  # key -> reason, for keys given with a value that would ask for something
    inert_at_default: list[str]


def _families(text: str) -> tuple[str, ...]:
    text = text.strip()
    if not text.startswith("[") or "for " in text:
        return ()  # computed lists in SimpleTuner's source: no fixed family set
    try:
        return tuple(json.loads(text))
    except ValueError:
        return ()


@functools.lru_cache(maxsize=1)
def peer_keys() -> dict[str, PeerKey]:
    lines = [ln for ln in TABLE.read_text().splitlines() if not ln.startswith("#")]
    out = {}
    for row in csv.DictReader(lines, delimiter="\t"):
        out[row["name"]] = PeerKey(row["name"], row["type"], row["tab"], row["section"], row["default"],
                                   row["choices"], row["importance"], _families(row["model_specific"]))
    return out


def status_of(name: str, ours: Iterable[str]) -> KeyStatus:
    """The status of SimpleTuner key ``name``, given the names of our config fields."""
    if name in set(ours):
        return KeyStatus("implemented", "")
    if name in ALIASES:
        return KeyStatus("alias", ALIASES[name])
    if name in INVERSE_ALIASES:
        return KeyStatus("alias", f"not {INVERSE_ALIASES[name]}")
    if name in cs.ALIASES:
        return KeyStatus("alias", cs.ALIASES[name])
    if name in cs.INERT:
        return KeyStatus("inert", cs.INERT[name])
    if name in cs.UNSUPPORTED:
        return KeyStatus("unsupported", cs.UNSUPPORTED[name])
    key = peer_keys().get(name)
    if key is None:
        return KeyStatus("unsupported", f"{name} is not supported here")
    if key.families and not OUR_FAMILIES & set(key.families):
        return KeyStatus("inert", f"applies only to SimpleTuner's {', '.join(key.families)} model "
                                  f"famil{'y' if len(key.families) == 1 else 'ies'}")
    for prefix, reason in cs.INERT_PREFIXES:
        if name.startswith(prefix):
            return KeyStatus("inert", reason)
    for prefix, reason in cs.UNSUPPORTED_PREFIXES:
        if name.startswith(prefix):
            return KeyStatus("unsupported", reason)
    reason = cs.SECTION_REASONS.get(key.section, "not supported here")
    return KeyStatus("unsupported", reason)


# --- values -----------------------------------------------------------------------------------------------


def _default(key: PeerKey) -> Any:
    text = key.default.strip()
    if key.type == "CHECKBOX":
        return text.lower() == "true"
    if key.type == "NUMBER":
        try:
            return float(text)
        except ValueError:
            return None
    return text


def _literal_choices(key: PeerKey) -> list[Any] | None:
    if key.type != "SELECT" or not key.choices.startswith("[") or "for " in key.choices:
        return None
    try:
        choices = json.loads(key.choices)
    except ValueError:
        return None
    return choices or None


def type_problem(key: PeerKey, value: Any) -> str | None:
    """Why ``value`` cannot be a value of ``key`` in SimpleTuner either, or None."""
    if value is None or value == "":
        return None
    if key.type == "CHECKBOX":
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return None
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return None
        return f"expected true/false, got {value!r}"
    if key.type == "NUMBER":
        number = _number(value)
        if number is None:
            return f"expected a number, got {value!r}"
        return None
    choices = _literal_choices(key)
    if choices is not None:
        shown = [c for c in choices if c is not None]
        if value not in choices and str(value) not in [str(c) for c in shown]:
            return f"must be one of {', '.join(map(str, shown))}; got {value!r}"
    if key.type in ("TEXT", "TEXTAREA") and not isinstance(value, (str, int, float)):
        return f"expected a string, got {type(value).__name__}"
    return None


def _number(value: Any) -> float | None:
    from simpletuner_core.config.model import _float

    try:
        return _float(value, float)
    except ValueError:
        return None


def is_off(key: PeerKey | None, value: Any) -> bool:
    """Does ``value`` ask for nothing: false, null, 0, empty, ``none``, or SimpleTuner's own default?"""
    if value is None or value is False or value == 0 or value in ("", [], {}):
        return True
    if isinstance(value, str) and value.strip().lower() in ("", "none", "null", "false", "0", "no", "off"):
        return True
    if key is None:
        return False
    default = _default(key)
    if key.type == "CHECKBOX":
        text = str(value).strip().lower()
        return (text in ("true", "1", "yes", "on")) == default
    if key.type == "NUMBER":
        return default is not None and _number(value) == default
    return str(value).strip() == str(default)


# --- triage -----------------------------------------------------------------------------------------------


def triage(data: Mapping[str, Any], ours: Iterable[str]) -> Triage:
    """Split SimpleTuner-only keys out of ``data`` (bare keys, already migrated)."""
    known = set(ours)
    table = peer_keys()
    kept: dict[str, Any] = {}
    errors: list[ConfigError] = []
    inert: dict[str, str] = {}
    at_default: list[str] = []
    for name, value in data.items():
        if name in known or (name not in table and name not in cs.INERT_LEGACY):
            kept[name] = value  # ours, or unknown: structuring reports unknown keys with a did-you-mean
            continue
        key = table.get(name)
        status = KeyStatus("inert", cs.INERT_LEGACY[name]) if key is None else status_of(name, known)
        if status.status == "alias":
            kept[name] = value  # an alias the migrations did not rename: let structuring name it
            continue
        problem = type_problem(key, value) if key is not None else None
        if problem:
            errors.append(ConfigError(name, problem))
        elif status.status == "unsupported":
            if not is_off(key, value):
                errors.append(ConfigError(name, status.detail))
        elif is_off(key, value):
            at_default.append(name)
        else:
            inert[name] = status.detail
    return Triage(kept, errors, inert, at_default)


def notes(data: Mapping[str, Any], ours: Iterable[str]) -> list[str]:
    """Warnings for the inert SimpleTuner keys in ``data``: one per key set to a value, one line for the rest."""
    result = triage(data, ours)
    out = [f"{name} has no effect here: {reason}" for name, reason in sorted(result.inert.items())]
    if result.inert_at_default:
        names = sorted(result.inert_at_default)
        out.append(f"{len(names)} SimpleTuner key(s) at their defaults have no effect here and were ignored: "
                   f"{', '.join(names)}")
    return out


def statuses(ours: Iterable[str]) -> dict[str, KeyStatus]:
    """Every SimpleTuner key (registry and legacy names) with its status."""
    known = set(ours)
    out = {name: status_of(name, known) for name in peer_keys()}
    for name, reason in cs.INERT_LEGACY.items():
        out.setdefault(name, KeyStatus("inert", reason))
    for old, new in ALIASES.items():
        out.setdefault(old, KeyStatus("alias", new))
    for old, new in INVERSE_ALIASES.items():
        out.setdefault(old, KeyStatus("alias", f"not {new}"))
    return out
