"""The agent's copy of a dispatched job: data in place or fetched by hash, paths pointed into its home.

A dataset directory whose every file the agent can read at the orchestrator's path with the same sha256 is
used in place (shared storage). Otherwise each missing blob is fetched into ``HOME/blobs`` (content-addressed,
so a re-run fetches nothing and a changed image fetches one file) and hard-linked into a per-job dataset dir.
Outputs and caches always go to the agent's home. A requeued job resumes from its last reported checkpoint
when the checkpoint is readable here and the data is used in place (checkpoints record sample paths).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from simpletuner_core.agent.client import Orchestrator
from simpletuner_core.workers.datasets import sha256_of


def _matches(directory: Path, files: list[dict[str, Any]]) -> bool:
    for item in files:
        path = directory / item["path"]
        try:
            if not path.is_file() or path.stat().st_size != item["size"] or sha256_of(path) != item["sha256"]:
                return False
        except OSError:
            return False
    return True


def _place(blob: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(blob, target)
    except OSError:
        shutil.copy2(blob, target)


def _checkpoint_readable(path: str | None) -> bool:
    return bool(path) and (Path(str(path)) / "manifest.json").is_file()


def prepare(dispatch: dict[str, Any], home: Path, client: Orchestrator, local_id: str,
            shared_storage: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the local job's config, what happened to the data: files in place / fetched / bytes / resumed)."""
    config = dict(dispatch["config"])
    dataloader = copy.deepcopy(dispatch.get("dataloader"))
    stats: dict[str, Any] = {"files": 0, "in_place": 0, "fetched_files": 0, "fetched_bytes": 0, "cached_files": 0}
    work = home / "dispatch" / local_id
    for key, described in (dispatch.get("datasets") or {}).items():
        index, field = key.split(".", 1)
        files = described["files"]
        stats["files"] += len(files)
        source = Path(described["path"])
        if shared_storage and _matches(source, files):
            stats["in_place"] += len(files)
            continue
        local_dir = work / "datasets" / key
        for item in files:
            sha = item["sha256"]
            blob = home / "blobs" / sha[:2] / sha
            if blob.is_file() and blob.stat().st_size == item["size"]:
                stats["cached_files"] += 1
            else:
                stats["fetched_bytes"] += client.download(f"/api/workers/files/{sha}", blob, sha)
                stats["fetched_files"] += 1
            _place(blob, local_dir / item["path"])
        if dataloader is not None:
            dataloader[int(index)][field] = str(local_dir)
    if dataloader is not None:
        for entry in dataloader:
            for name in list(entry):
                if name.startswith("cache_dir") and entry[name]:  # the worker's own, one per orchestrator path:
                    key = hashlib.sha256(str(entry[name]).encode()).hexdigest()[:16]  # reused like a local one
                    entry[name] = str(home / "cache" / key)
        work.mkdir(parents=True, exist_ok=True)
        (work / "multidatabackend.json").write_text(json.dumps(dataloader, indent=2))
        config["--data_backend_config"] = str(work / "multidatabackend.json")
    config["--output_dir"] = str(home / "output" / local_id)
    resume = dispatch.get("resume_checkpoint")
    # A checkpoint records its samples' paths (the resume order depends on them): only a worker that reads the
    # data where the orchestrator has it resumes; one that fetched its data starts over.
    if _checkpoint_readable(resume) and stats["in_place"] == stats["files"]:
        config["--resume_from_checkpoint"] = resume
        stats["resumed_from"] = resume
    return config, stats


def outputs(output_dir: Path, limit: int = 10_000) -> list[dict[str, Any]]:
    """Every file the job left (relative path, size); checkpoints included: they stay on the worker."""
    found = []
    if output_dir.is_dir():
        for path in sorted(output_dir.rglob("*")):
            if path.is_file() and len(found) < limit:
                found.append({"path": path.relative_to(output_dir).as_posix(), "size": path.stat().st_size})
    return found
