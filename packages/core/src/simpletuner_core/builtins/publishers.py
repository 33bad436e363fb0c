"""Built-in publishers: ``hub`` (Hugging Face Hub via huggingface_hub) and ``local`` (copy to a directory).

Both run in the publishing thread (see :mod:`simpletuner_core.hooks.publish`). The hub client honours
``HF_ENDPOINT`` (a mirror or a self-hosted hub) and ``HF_TOKEN``; the token is never logged or stored in events.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simpletuner_core.hooks.publish import FINAL_IGNORE, PublishItem
from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import PublisherSpec


def _hub_wants(cfg: Any, kind: str) -> bool:
    return bool(cfg.push_to_hub) and (kind == "final" or bool(cfg.push_checkpoints_to_hub))


def _files(root: Path, skip_top: tuple[str, ...]) -> list[Path]:
    """Files under ``root``, leaving out top-level entries matching ``skip_top`` (checkpoints, logs, dot-files)."""
    out = []
    for path in sorted(root.rglob("*")):
        top = path.relative_to(root).parts[0]
        if path.is_file() and not any(fnmatch.fnmatch(top, pattern) for pattern in skip_top):
            out.append(path)
    return out


def _hub_publish(item: PublishItem) -> str:
    """One commit per checkpoint (under ``checkpoint-N/``) or for the final model (repo root, with the card)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    api = HfApi(endpoint=endpoint, token=os.environ.get("HF_TOKEN") or None)
    repo = item.config.hub_model_id
    # Private unless asked otherwise: checkpoints and the card describe the run (its config, its data).
    api.create_repo(repo, repo_type="model", exist_ok=True, private=bool(getattr(item.config, "model_card_private", True)))
    checkpoint = item.kind == "checkpoint"
    prefix = f"{item.path.name}/" if checkpoint else ""
    files = _files(item.path, (".*",) if checkpoint else FINAL_IGNORE)
    operations = [CommitOperationAdd(path_in_repo=prefix + f.relative_to(item.path).as_posix(), path_or_fileobj=f)
                  for f in files]
    message = (f"checkpoint at step {item.step}" if checkpoint else f"final model at step {item.step}")
    api.create_commit(repo_id=repo, operations=operations, commit_message=f"{message} (job {item.job_id})")
    return f"{endpoint}/{repo}/tree/main/{item.path.name}" if checkpoint else f"{endpoint}/{repo}"


def _local_wants(cfg: Any, kind: str) -> bool:
    return bool(cfg.publish_local_dir) and (kind == "final" or bool(cfg.push_checkpoints_to_hub))


def _local_publish(item: PublishItem) -> str:
    """Copy into a private temp directory next to the target, then swap it in with two renames: readers never see
    a half-copied model, a failed copy leaves nothing behind and the previous copy in place."""
    root = Path(item.config.publish_local_dir).expanduser()
    if not root.is_absolute():  # the config rule refuses this too; a relative path depends on the cwd
        raise ValueError(f"publish_local_dir must be an absolute path, got {str(root)!r}")
    root.mkdir(parents=True, exist_ok=True)
    target = root / (item.path.name if item.kind == "checkpoint" else "final")
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        staged, old = scratch / "new", scratch / "old"
        ignore = None if item.kind == "checkpoint" else shutil.ignore_patterns(*FINAL_IGNORE)
        shutil.copytree(item.path, staged, ignore=ignore)
        if target.exists():
            os.replace(target, old)  # aside, not deleted: the swap below is two renames, no rmtree window
        try:
            os.replace(staged, target)
        except OSError:
            if old.exists() and not target.exists():
                os.replace(old, target)  # put the previous copy back
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the old copy, or a partial one after a failure
    return str(target)


@hookimpl
def register_publishers(register: Callable[[PublisherSpec], None]) -> None:
    register(PublisherSpec("hub", _hub_publish, "Hugging Face Hub (push_to_hub, hub_model_id; HF_ENDPOINT, "
                           "HF_TOKEN).", wants=_hub_wants))
    register(PublisherSpec("local", _local_publish, "Copy to publish_local_dir.", wants=_local_wants))
