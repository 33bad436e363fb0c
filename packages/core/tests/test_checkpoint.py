"""Checkpoints are atomic: the manifest is written last, retention deletes only after a new one is complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from simpletuner_core.training.checkpoint import (
    CheckpointError,
    list_checkpoints,
    resolve_resume,
    save_checkpoint,
)


def write_state(directory: Path) -> None:
    (directory / "model.safetensors").write_bytes(b"weights")


def test_save_and_latest(tmp_path: Path) -> None:
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, step, write_state, {"epoch": 0}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 15]
    assert resolve_resume("latest", tmp_path) == tmp_path / "checkpoint-15"
    assert not list(tmp_path.glob(".checkpoint-*"))


def test_a_crash_while_writing_leaves_latest_untouched(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 5, write_state, {})

    def crash(directory: Path) -> None:
        (directory / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 10, crash, {}, keep=1)
    assert resolve_resume("latest", tmp_path) == tmp_path / "checkpoint-5"
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5]  # retention never ran
    (tmp_path / "checkpoint-20").mkdir()  # no manifest: incomplete
    assert resolve_resume("latest", tmp_path) == tmp_path / "checkpoint-5"


def test_explicit_paths(tmp_path: Path) -> None:
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("latest", tmp_path) is None
    save_checkpoint(tmp_path, 3, write_state, {})
    assert resolve_resume("checkpoint-3", tmp_path) == tmp_path / "checkpoint-3"
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        resolve_resume(str(tmp_path / "nowhere"), tmp_path)


def test_retention_keeps_the_new_checkpoint_when_an_old_run_left_higher_steps(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 300, write_state, {})  # an earlier run in the same output_dir
    new = save_checkpoint(tmp_path, 150, write_state, {}, keep=1)
    assert new.exists() and [s for s, _ in list_checkpoints(tmp_path)] == [150]
    assert resolve_resume("latest", tmp_path) == new


def test_rewriting_a_step_swaps_atomically(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 5, write_state, {"run": 1})
    save_checkpoint(tmp_path, 5, write_state, {"run": 2})
    from simpletuner_core.training.checkpoint import read_manifest

    assert read_manifest(tmp_path / "checkpoint-5")["run"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]
