"""Atomic checkpoints with a manifest written last.

Layout: ``<output_dir>/checkpoint-<step>/`` holding accelerate's state plus ``manifest.json``. A checkpoint is
written to a hidden temp directory, fsynced, renamed into place; the manifest (step, epoch, position, config hash,
adapter hyper-parameters, seed) is the completion marker, so ``latest`` never picks a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(RuntimeError):
    pass


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(directory) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("complete") is True else None


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest written first (by manifest time, then step).

    Ordering by write time, not step number, matters when an output directory holds checkpoints of an earlier
    run with higher step numbers: retention must never delete the checkpoint that was just written.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        manifest = read_manifest(child) if match and child.is_dir() else None
        if manifest is not None:
            found.append((float(manifest.get("created_at", 0.0)), int(match.group(1)), child))
    return [(step, path) for _, step, path in sorted(found)]


def remove_checkpoint(path: Path) -> None:
    """Manifest first, so a half-deleted checkpoint is never taken for a complete one."""
    (Path(path) / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def resolve_resume(value: str | None, output_dir: Path) -> Path | None:
    """``latest`` → newest complete checkpoint (None if there is none); a path must hold a complete one."""
    if not value:
        return None
    if value == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        path = Path(output_dir) / value
    if read_manifest(path) is None:
        raise CheckpointError(f"resume_from_checkpoint {value!r}: {path} is not a complete checkpoint "
                              f"(no valid {MANIFEST}); use 'latest' or one of "
                              f"{[p.name for _, p in list_checkpoints(output_dir)]}")
    return path


def save_checkpoint(output_dir: Path, step: int, write_state: Callable[[Path], None],
                    manifest: dict[str, Any], keep: int | None = None) -> Path:
    """Write state into a temp dir, fsync, rename, then apply retention (oldest first, never the new one)."""
    tmp = begin_checkpoint(output_dir, step)
    write_state(tmp)
    return finish_checkpoint(output_dir, step, tmp, manifest, keep)


def staging_dir(output_dir: Path, step: int) -> Path:
    """The temp directory every process of a run writes its part of checkpoint ``step`` into."""
    return Path(output_dir) / f".checkpoint-{step}.tmp"


def begin_checkpoint(output_dir: Path, step: int) -> Path:
    """Main process only: a fresh, empty staging directory."""
    tmp = staging_dir(output_dir, step)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def finish_checkpoint(output_dir: Path, step: int, tmp: Path, manifest: dict[str, Any],
                      keep: int | None = None) -> Path:
    """Main process only, after every process wrote its state: manifest last, fsync, rename, retention."""
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    body = {"created_at": time.time(), **manifest, "format": MANIFEST_FORMAT, "step": step, "complete": True}
    with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=2, default=str)
    _fsync_tree(tmp)
    if final.exists():  # same step written again (e.g. a rerun): move the old one aside before the swap
        stale = root / f".checkpoint-{step}.old-{os.getpid()}"
        os.replace(final, stale)
        os.replace(tmp, final)
        remove_checkpoint(stale)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    if keep:
        for _, old in list_checkpoints(root)[:-keep]:
            if old != final:
                remove_checkpoint(old)
    for stale in [*root.glob(".checkpoint-*.tmp"), *root.glob(".checkpoint-*.old-*")]:
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final
