"""Pure ``dict -> dict`` migrations, applied to a bare-key config before it is structured.

``MIGRATIONS[v]`` turns a version-``v`` config into version ``v + 1``. A config without ``config_version`` is
version 0: what SimpleTuner itself writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

CURRENT_VERSION = 2

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _v0_to_v1(cfg: dict[str, Any]) -> dict[str, Any]:
    """SimpleTuner configs: lower-case enum spellings it accepted and drop its web-form bookkeeping keys."""
    out = {k: v for k, v in cfg.items() if not k.startswith("__")}
    for key in ("lora_type", "model_type", "optimizer", "lr_scheduler", "report_to", "mixed_precision"):
        if isinstance(out.get(key), str):
            out[key] = out[key].strip().lower()
    out["config_version"] = 1
    return out


#: Older names → current ones (SimpleTuner's current spellings are canonical). SimpleTuner still accepts its
#: legacy names at any version, so these are applied to every config, not only to old versions.
ALIASES: dict[str, str] = {
    "checkpointing_steps": "checkpoint_step_interval",  # SimpleTuner's legacy name, and ours up to version 1
    "validation_steps": "validation_step_interval",
    "save_total_limit": "checkpoints_total_limit",
    "hub_private": "model_card_private",  # ours up to version 1
}
#: Old boolean keys whose meaning is the inverse of the current key's.
INVERSE_ALIASES: dict[str, str] = {"vae_cache_preprocess": "vae_cache_ondemand"}


#: Value spellings of SimpleTuner's that name one of our values.
VALUE_ALIASES: dict[str, dict[str, str]] = {
    "validation_method": {"simpletuner-local": "pipeline"},
    "report_to": {"comet_ml": "comet"},
}


class AliasConflict(ValueError):
    """An old and a current name were both given, with different values."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new
        super().__init__(f"{old} is the old name of {new}, and both are set to different values; keep only {new}")


def rename_aliases(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``cfg`` with old names replaced by current ones, and ``{current: old}`` for every key renamed."""
    out = {k: v for k, v in cfg.items() if not (isinstance(k, str) and k.startswith("__"))}  # web-form bookkeeping
    renamed: dict[str, str] = {}
    for table, invert in ((ALIASES, False), (INVERSE_ALIASES, True)):
        for old, new in table.items():
            if old not in out:
                continue
            value = out.pop(old)
            if invert and isinstance(value, bool):
                value = not value
            elif invert and isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
                value = value.strip().lower() not in ("true", "1")
            if new in out and out[new] != value:
                raise AliasConflict(old, new)
            out[new] = value
            renamed[new] = old
    for key, spellings in VALUE_ALIASES.items():
        if isinstance(out.get(key), str) and out[key] in spellings:
            out[key] = spellings[out[key]]
    return out, renamed


def canonical_name(key: str) -> str:
    """``--checkpointing_steps`` → ``checkpoint_step_interval``: the current bare name of a key."""
    bare = key[2:] if key.startswith("--") else key
    return ALIASES.get(bare) or INVERSE_ALIASES.get(bare) or bare


def overlay(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``{**base, **over}``, where a key of ``over`` also replaces ``base``'s spellings of the same key (``--x`` or
    ``x``, an old or a current name): overriding ``validation_steps`` on a config saved with
    ``validation_step_interval`` is an override, not a conflict."""
    replaced = {canonical_name(k) for k in over}
    return {**{k: v for k, v in base.items() if canonical_name(k) not in replaced}, **over}


def _v1_to_v2(cfg: dict[str, Any]) -> dict[str, Any]:
    """Version 2 takes SimpleTuner's current names (checkpoint_step_interval, validation_step_interval, ...)."""
    out, _ = rename_aliases(cfg)
    out["config_version"] = 2
    return out


MIGRATIONS: dict[int, Migration] = {0: _v0_to_v1, 1: _v1_to_v2}


def migrate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Bring ``cfg`` (bare keys) to :data:`CURRENT_VERSION`. Never mutates the argument."""
    out = dict(cfg)
    raw = out.get("config_version", 0)
    try:
        version = int(raw)
    except (TypeError, ValueError):
        return out  # structuring reports the bad value with its path
    if version > CURRENT_VERSION:
        return out  # rules report "newer than this release"
    while version < CURRENT_VERSION:
        out = MIGRATIONS[version](out)
        version += 1
    return rename_aliases(out)[0]
