"""Exact resume: kill -9 a trainer process mid-run, resume from `latest`, get the very same per-step losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simpletuner_core.events.log import read_events

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from conftest import tiny_config  # noqa: E402


def cli(home: Path, config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SIMPLETUNER_HOME": str(home), "SIMPLETUNER_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "simpletuner_core.cli", "train", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def losses(home: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for log in sorted((home / "jobs").glob("*/events.jsonl")):
        for event in read_events(log):
            if event.type == "training.status":
                out[event.data["step"]] = event.data["loss"]
    return out


def write(home: Path, tiny: Path, images: Path, **overrides: object) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    raw = tiny_config(home, tiny, images, max_train_steps=150, checkpointing_steps=10, train_batch_size=2,
                      gradient_accumulation_steps=2, lr_scheduler="cosine", lr_warmup_steps=5, seed=11,
                      lora_dropout=0.0, caption_dropout_probability=0.2, **overrides)
    path = home / "train.json"
    path.write_text(json.dumps(raw))
    return path


def test_kill_9_then_resume_reproduces_the_uninterrupted_run(tmp_path: Path, tiny_pixart_dir: Path,
                                                             demo_images: Path) -> None:
    straight = tmp_path / "straight"
    proc = cli(straight, write(straight, tiny_pixart_dir, demo_images))
    assert proc.wait(timeout=300) == 0, proc.stdout.read() if proc.stdout else ""
    reference = losses(straight)
    assert sorted(reference) == list(range(1, 151))

    crashed = tmp_path / "crashed"
    config = write(crashed, tiny_pixart_dir, demo_images)
    proc = cli(crashed, config)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        saved = [e for log in (crashed / "jobs").glob("*/events.jsonl") for e in read_events(log)
                 if e.type == "checkpoint.saved"]
        if saved:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the trainer finished before it could be killed"
    before = losses(crashed)
    assert max(before) < 150

    resume = json.loads(config.read_text()) | {"--resume_from_checkpoint": "latest"}
    config.write_text(json.dumps(resume))
    proc = cli(crashed, config)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    resumed_events = [e for log in sorted((crashed / "jobs").glob("*/events.jsonl")) for e in read_events(log)]
    stage = next(e for e in resumed_events if e.type == "job.stage" and e.data["stage"] == "init_resume_checkpoint")
    resumed_at = int(stage.data["message"].split("at step ")[1])
    after = {e.data["step"]: e.data["loss"] for e in resumed_events
             if e.type == "training.status" and e.timestamp >= stage.timestamp}
    assert sorted(after) == list(range(resumed_at + 1, 151))
    assert after == {step: reference[step] for step in after}  # bit-identical, not approximately equal
