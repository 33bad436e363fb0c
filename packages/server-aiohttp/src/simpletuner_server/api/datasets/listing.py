"""Read-only views of the datasets root for ``GET /api/datasets`` and ``/api/datasets/files``.

Hidden entries (dot-names, which include in-flight upload staging) are never shown; symlinks are not followed
while counting, so a link cannot make a listing walk outside the root or loop. Paths are relative to the root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from simpletuner_server.api.datasets.uploads import EXTENSIONS, is_inside

MAX_COUNTED = 200_000  # entries walked per dataset folder before its counts are marked truncated


def _kind(name: str) -> str:
    kind = EXTENSIONS.get(os.path.splitext(name)[1].lower())
    return "other" if kind is None else "caption" if kind == "text" else "image"


def _counts(folder: Path) -> dict[str, Any]:
    counts: dict[str, Any] = {"images": 0, "captions": 0, "other": 0, "bytes": 0, "truncated": False}
    seen = 0
    for current, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            seen += 1
            if seen > MAX_COUNTED:
                counts["truncated"] = True
                return counts
            counts[{"image": "images", "caption": "captions", "other": "other"}[_kind(name)]] += 1
            try:
                counts["bytes"] += os.stat(os.path.join(current, name), follow_symlinks=False).st_size
            except OSError:
                pass
    return counts


def list_datasets(root: Path) -> list[dict[str, Any]]:
    """Top-level folders of the (resolved) root with recursive file counts, by name."""
    datasets = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        path = Path(entry.path)
        if entry.is_symlink() and not is_inside(path.resolve(), root):
            continue  # a link leading out of the root is not a dataset the API can touch
        datasets.append({"name": entry.name, "path": entry.name, **_counts(path)})
    return datasets


def list_files(folder: Path, offset: int, limit: int) -> dict[str, Any]:
    """One folder's visible subfolders and a page of its files (name order)."""
    folders, files = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folders.append(entry.name)
        elif entry.is_file():
            files.append(entry)
    page = [{"name": e.name, "size": e.stat().st_size, "kind": _kind(e.name)} for e in files[offset:offset + limit]]
    return {"folders": folders, "files": page, "total_files": len(files), "offset": offset, "limit": limit}
