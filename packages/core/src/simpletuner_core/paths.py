"""The state directory (``SIMPLETUNER_HOME``, default ``~/.simpletuner``) and its layout."""

from __future__ import annotations

import os
import re
from pathlib import Path

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # use fullmatch: "$" would accept a trailing newline


def home() -> Path:
    return Path(os.environ.get("SIMPLETUNER_HOME") or Path.home() / ".simpletuner").expanduser()


def config_root(base: Path | None = None) -> Path:
    return (base or home()) / "config"


def jobs_root(base: Path | None = None) -> Path:
    return (base or home()) / "jobs"


def cache_root(base: Path | None = None) -> Path:
    return (base or home()) / "cache"


def check_name(name: str, what: str = "environment") -> str:
    """Names become directory names: letters, digits, ``-`` and ``_`` only (no dots, no separators)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name
