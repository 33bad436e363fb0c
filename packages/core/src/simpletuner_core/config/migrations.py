"""Pure ``dict -> dict`` migrations, applied to a bare-key config before it is structured.

``MIGRATIONS[v]`` turns a version-``v`` config into version ``v + 1``. A config without ``config_version`` is
version 0: what SimpleTuner itself writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CURRENT_VERSION = 1

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _v0_to_v1(cfg: dict[str, Any]) -> dict[str, Any]:
    """SimpleTuner configs: lower-case enum spellings it accepted and drop its web-form bookkeeping keys."""
    out = {k: v for k, v in cfg.items() if not k.startswith("__")}
    for key in ("lora_type", "model_type", "optimizer", "lr_scheduler", "report_to", "mixed_precision"):
        if isinstance(out.get(key), str):
            out[key] = out[key].strip().lower()
    out["config_version"] = 1
    return out


MIGRATIONS: dict[int, Migration] = {0: _v0_to_v1}


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
    return out
