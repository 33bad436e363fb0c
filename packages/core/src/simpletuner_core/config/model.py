"""Wire format ⇄ typed config: one cattrs converter, unknown keys rejected with a did-you-mean.

The wire format is the tutorial's: a flat mapping of ``--key`` (or bare ``key``) to a value. Form posts send every
value as a string, so scalar hooks accept ``"1e-4"``, ``"true"``, ``"0"``; they never guess beyond that.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from simpletuner_core.config import compat
from simpletuner_core.config.errors import ConfigError, ConfigInvalid, suggest_key
from simpletuner_core.config.fields import CoreConfig
from simpletuner_core.config.migrations import ALIASES, AliasConflict, migrate

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true/false, got {value!r}")


def _int(value: Any, _: type) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                as_float = float(text)  # "1e3" is fine, "2.5" is not
            except ValueError:
                as_float = 0.5
            if as_float.is_integer():
                return int(as_float)
    raise ValueError(f"expected an integer, got {value!r}")


def _float(value: Any, _: type) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    out: float | None = None
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            out = None
    if out is None or not math.isfinite(out):  # nan/inf would only fail (or silently poison) training later
        raise ValueError(f"expected a finite number, got {value!r}")
    return out


def _str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def make_converter() -> cattrs.Converter:
    """The converter every config path uses (CLI, server, trainer): one source of truth."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook(str, _str)
    return conv


CONVERTER = make_converter()


@functools.lru_cache(maxsize=8)
def _config_class(plugin_fields: tuple[tuple[str, Any, Any, str, tuple[Any, ...]], ...]) -> type:
    if not plugin_fields:
        return CoreConfig
    these = {
        name: attrs.field(default=default, metadata={"help": help_, "choices": choices}, type=typ)
        for name, typ, default, help_, choices in plugin_fields
    }
    return attrs.make_class("TrainConfig", these, bases=(CoreConfig,), frozen=True, kw_only=True)


def config_class(registry: Any | None = None) -> type:
    """CoreConfig plus every plugin-contributed field (typed as ``T | None``)."""
    if registry is None:
        from simpletuner_core.plugins import get_registry

        registry = get_registry()
    core = {a.name for a in attrs.fields(CoreConfig)}
    extra = tuple(
        (cf.name, cf.type | None, cf.default, cf.help, tuple(cf.choices))
        for cf in registry.config_fields.values()
        if cf.name not in core
    )
    return _config_class(extra)


def strip_dashes(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``{"--learning_rate": 1}`` → ``{"learning_rate": 1}``; bare keys pass through."""
    return {(k[2:] if isinstance(k, str) and k.startswith("--") else k): v for k, v in raw.items()}


def to_wire(cfg: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A config (object or bare-key dict) in the tutorial's ``--key`` form."""
    data = attrs.asdict(cfg) if attrs.has(type(cfg)) else dict(cfg)
    return {f"--{k}": v for k, v in data.items()}


def _optional_blank(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """An empty form value for an optional field means "unset"."""
    out = dict(data)
    hints = {a.name: a.type for a in attrs.fields(cls)}
    for key, value in data.items():
        hint = hints.get(key)
        if value == "" and hint is not None and _allows_none(hint):
            out[key] = None
    return out


def _allows_none(hint: Any) -> bool:
    if isinstance(hint, str):
        return "None" in hint
    origin = typing.get_origin(hint)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _flatten(exc: BaseException, path: str, known: list[str]) -> list[ConfigError]:
    if isinstance(exc, ForbiddenExtraKeysError):
        return [
            ConfigError(key, "unknown config key", suggest_key(key, [*known, *compat.peer_keys(), *ALIASES]))
            for key in sorted(exc.extra_fields)
        ]
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        out: list[ConfigError] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            name = getattr(note, "name", None)
            if name is None:
                name = getattr(note, "index", None)
            sub_path = f"{path}.{name}" if path and name is not None else str(name if name is not None else path)
            out.extend(_flatten(sub, sub_path, known))
        for sub in without:
            out.extend(_flatten(sub, path, known))
        return out
    if isinstance(exc, KeyError):
        return [ConfigError(path or str(exc), "missing required key")]
    return [ConfigError(path or "config", str(exc) or type(exc).__name__)]


def structure(raw: Mapping[str, Any], registry: Any | None = None) -> Any:
    """Parse a wire-format mapping into the typed config, or raise :class:`ConfigInvalid` with all errors.

    Only structure and types are checked here; :func:`simpletuner_core.config.rules.check` adds the semantic rules.
    """
    if not isinstance(raw, Mapping):
        raise ConfigInvalid([ConfigError("config", f"expected a JSON object, got {type(raw).__name__}")])
    cls = config_class(registry)
    try:
        migrated = migrate(strip_dashes(raw))
    except AliasConflict as exc:
        raise ConfigInvalid([ConfigError(exc.old, str(exc))]) from None
    known = [a.name for a in attrs.fields(cls)]
    triaged = compat.triage(migrated, known)  # SimpleTuner keys we don't have: dropped, or refused with a reason
    data = _optional_blank(cls, triaged.kept)
    try:
        cfg = CONVERTER.structure(data, cls)
    except Exception as exc:  # cattrs raises exception groups; flatten them to {path, message}
        raise ConfigInvalid([*triaged.errors, *_flatten(exc, "", known)]) from None
    if triaged.errors:
        raise ConfigInvalid(triaged.errors)
    return cfg


def unstructure(cfg: Any) -> dict[str, Any]:
    return CONVERTER.unstructure(cfg)


def field_docs(registry: Any | None = None) -> list[dict[str, Any]]:
    """Every key with type, default, choices and help: feeds `docs/config-reference.md` and the OpenAPI schema."""
    cls = config_class(registry)
    out = []
    for a in attrs.fields(cls):
        typ = a.type if isinstance(a.type, str) else getattr(a.type, "__name__", str(a.type))
        out.append({
            "name": a.name,
            "type": str(typ).replace("typing.", ""),
            "default": a.default,
            "choices": list(a.metadata.get("choices", ())),
            "help": a.metadata.get("help", ""),
        })
    return out
