"""What a dispatch says about a job's data: the dataloader and, per dataset directory, a manifest of its files
(relative path, sha256, size). A worker that reads the same content at the same path trains in place; any
other fetches the blobs it lacks by hash (see ``simpletuner_core.agent.data``)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
DIR_KEYS = ("instance_data_dir", "conditioning_data_dir")  # dataloader keys naming a directory of files to ship
_cache: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: re-dispatch hashes nothing new
_cache_lock = threading.Lock()


def sha256_of(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    with _cache_lock:
        _cache[key] = digest.hexdigest()
    return digest.hexdigest()


def load_dataloader(config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The job's dataloader entries (``--data_backend_config`` as a file path or inline JSON), None without one."""
    value = config.get("--data_backend_config")
    if value is None:
        return None
    if isinstance(value, list):
        return value
    text = str(value)
    loaded = json.loads(text) if text.lstrip().startswith("[") else json.loads(Path(text).expanduser().read_text())
    return loaded if isinstance(loaded, list) else None


def manifest(directory: Path) -> list[dict[str, Any]]:
    """Every regular file under ``directory`` (symlinks followed, hidden cache folders skipped), sorted."""
    files = []
    for root, dirs, names in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if path.is_file():
                files.append({"path": path.relative_to(directory).as_posix(), "sha256": sha256_of(path),
                              "size": path.stat().st_size})
    return files


def describe(dataloader: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``{"<dataset index>.<key>": {"path", "files"}}`` for every directory the dataloader names."""
    found: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(dataloader or []):
        for key in DIR_KEYS:
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and Path(value).expanduser().is_dir():
                directory = Path(value).expanduser().resolve()
                found[f"{index}.{key}"] = {"path": str(directory), "files": manifest(directory)}
    return found
