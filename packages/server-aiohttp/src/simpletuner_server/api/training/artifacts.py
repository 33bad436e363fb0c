"""What a job left on disk, as the API shows it: its output directory, files inside it, checkpoints and their zips.

Blocking filesystem work only (handlers call it through ``asyncio.to_thread``). Every path a client names is
resolved with symlinks followed and must stay inside the job's output directory, so a link planted in an output
directory cannot expose the rest of the machine.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from simpletuner_core.jobs import models as m
from simpletuner_core.training.checkpoint import list_checkpoints
from simpletuner_server.auth import iso

#: Served inline with their own content type; every other file is an attachment.
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

SPOOL_MAX_AGE = 6 * 3600  # seconds


class OutsideOutput(ValueError):
    """The path resolves outside the job's output directory."""


def output_root(job: m.Job, home: Path) -> Path | None:
    """The job's output directory as its trainer sees it (trainers run in ``home``, so a relative one is
    relative to it); None when the job names none."""
    raw = job.output_dir or job.config.get("--output_dir")
    if not isinstance(raw, str) or not raw:
        return None
    path = Path(raw).expanduser()
    return path if path.is_absolute() else home / path


def inside(path: Path, root: Path) -> bool:
    """Both resolved."""
    return path == root or root in path.parents


def resolve_in(root: Path, rel: str) -> tuple[Path, Path]:
    """(``root``, ``root / rel``), both with symlinks followed; :class:`OutsideOutput` when the second leaves the
    first, ValueError when ``rel`` is no usable path (NUL bytes, lone surrogates), OSError from the filesystem."""
    if "\x00" in rel:
        raise ValueError("contains a NUL byte")
    rel.encode("utf-8")  # lone surrogates: UnicodeEncodeError, a ValueError
    try:
        real_root = root.resolve()
        candidate = (real_root / rel).resolve()
    except RuntimeError as exc:  # a symlink loop on older Pythons
        raise OSError(str(exc)) from None
    if not inside(candidate, real_root):
        raise OutsideOutput(rel)
    return real_root, candidate


def relative_url(job_id: str, root: Path, home: Path, reported: str) -> str | None:
    """The ``/api/training/files`` address of a file the trainer reported (absolute, or relative to ``home``,
    where trainers run); None when it lies outside ``root``."""
    try:
        path = Path(reported)
        real_root, real = resolve_in(root, str((path if path.is_absolute() else home / path).absolute()))
    except (ValueError, OSError):  # OutsideOutput is a ValueError
        return None
    return "/api/training/files?" + query(job_id=job_id, path=real.relative_to(real_root).as_posix())


def query(**params: Any) -> str:
    """A query string with every reserved character percent-encoded (``/`` too, spaces as ``%20``)."""
    return urlencode(params, quote_via=quote)


# --- checkpoints --------------------------------------------------------------------------------------------


def _files(directory: Path) -> Iterator[Path]:
    """Regular files under ``directory``, sorted; symlinks are neither followed nor listed (a checkpoint is
    what the trainer wrote, and a link could point anywhere)."""
    for base, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            path = Path(base, name)
            if not path.is_symlink() and path.is_file():
                yield path


def checkpoint_entry(job_id: str, step: int, path: Path) -> dict[str, Any]:
    """``{step, path, size_bytes, created_at, download_url}`` of one complete checkpoint."""
    size = sum(file.stat().st_size for file in _files(path))
    return {"step": step, "path": str(path), "size_bytes": size, "created_at": iso(path.stat().st_mtime),
            "download_url": "/api/training/checkpoints/download?" + query(job_id=job_id, step=step)}


def _complete(root: Path | None) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``root``, oldest written first; a checkpoint directory that is a link leading
    out of ``root`` is not one (what the API may expose is the output directory only)."""
    if root is None:
        return []
    real_root = root.resolve()
    return [(step, path) for step, path in list_checkpoints(root) if inside(path.resolve(), real_root)]


def checkpoints(job_id: str, root: Path | None) -> list[dict[str, Any]]:
    """Entries of the complete checkpoints; one removed meanwhile (retention) is left out."""
    found = []
    for step, path in _complete(root):
        try:
            found.append(checkpoint_entry(job_id, step, path))
        except FileNotFoundError:
            continue
    return found


def find_checkpoint(root: Path | None, step: int) -> Path | None:
    return next((path for found, path in _complete(root) if found == step), None)


def zip_checkpoint(directory: Path, spool: Path) -> Path:
    """``directory`` zipped (stored, not compressed: weights barely compress) into a new file under ``spool``,
    entries named ``<directory name>/<relative path>``; the caller deletes it once sent. Zips older than
    ``SPOOL_MAX_AGE`` (left by a client that went away before its download started) are removed first."""
    spool.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - SPOOL_MAX_AGE
    for stale in spool.glob("checkpoint-*.zip"):
        with contextlib.suppress(OSError):
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
    handle, name = tempfile.mkstemp(prefix="checkpoint-", suffix=".zip", dir=spool)
    os.close(handle)
    target = Path(name)
    try:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for file in _files(directory):
                archive.write(file, f"{directory.name}/{file.relative_to(directory).as_posix()}")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target
