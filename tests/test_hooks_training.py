"""Hooks around a real (tiny, in-process) training run: external validation, post-checkpoint scripts, a webhook
receiver that is down for the whole run."""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "webhooks" / "tests"))
from webhook_receiver import Receiver

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import validate
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry

APPEND_ARGV = """
import json, sys
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps(sys.argv[2:]) + "\\n")
"""


def train(raw: dict[str, Any], home: Path) -> tuple[int, Any, list[Any]]:
    code, result = run_job(validate(raw), home, get_registry(), job_id="job")
    return code, result, read_events(home / "jobs" / "job" / "events.jsonl")


def lines(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_external_validation_and_post_checkpoint_scripts_get_the_right_values(home: Path, tiny_cfg: Any) -> None:
    script = home / "record.py"
    script.write_text(APPEND_ARGV)
    validation_out, checkpoint_out = home / "validation.jsonl", home / "checkpoint.jsonl"
    raw = tiny_cfg(
        max_train_steps=4, checkpointing_steps=2, validation_steps=2, validation_prompt="a red square",
        validation_method="external-script", validation_num_inference_steps=7, tracker_run_name="run one",
        validation_external_script=f"{sys.executable} {script} {validation_out} {{local_checkpoint_path}} "
                                   "{global_step} {validation_num_inference_steps} {remote_checkpoint_path} "
                                   "{tracker_run_name} {model_family} {validation_prompt}",
        post_checkpoint_script=f"{sys.executable} {script} {checkpoint_out} {{local_checkpoint_path}} "
                               "{global_step} {tracker_project_name} {huggingface_path}")
    code, result, events = train(raw, home)
    assert code == 0 and result.status == "completed"
    checkpoint = str(home / "output" / "checkpoint-2")
    assert lines(validation_out) == [
        [checkpoint, "2", "7", "", "run one", "pixart_sigma", "a red square"],
        [checkpoint, "4", "7", "", "run one", "pixart_sigma", "a red square"],  # newest checkpoint so far
    ]
    assert lines(checkpoint_out) == [[checkpoint, "2", "simpletuner", ""]]
    scripts = [e for e in events if e.type == "hook.script"]
    assert sorted(e.data["hook"] for e in scripts) == ["post_checkpoint", "validation", "validation"]
    assert all(e.data["returncode"] == 0 for e in scripts)
    assert not [e for e in events if e.type == "validation.image"]  # the script renders, not the trainer
    assert (home / "output" / "training-plot.png").is_file()


def test_a_failing_external_validation_fails_the_job_only_when_fatal(home: Path, tiny_cfg: Any) -> None:
    failing = f"{sys.executable} -c 'import sys; print(\"boom\"); sys.exit(4)'"
    base = {"max_train_steps": 2, "validation_steps": 1, "validation_prompt": "x",
            "validation_method": "external-script", "validation_external_script": failing}
    code, result, events = train(tiny_cfg(**base), home)
    assert code == 0 and result.status == "completed"
    assert [e.data["returncode"] for e in events if e.type == "hook.script"] == [4, 4]
    code, result, events = train(tiny_cfg(**base, hook_script_fatal=True), home)
    assert code == 1 and result is None
    failed = [e for e in events if e.type == "job.failed"][-1]
    assert "HookScriptError: validation script exited with 4" in failed.data["reason"]
    assert "boom" in failed.data["reason"]


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hook"


def test_receivers_down_for_the_whole_run_cost_nothing_but_one_log_line(
        home: Path, tiny_cfg: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="simpletuner_webhooks")
    failing = Receiver(always=503)
    try:
        knobs = {"max_attempts": 2, "backoff": 0.01, "failure_threshold": 2, "cooldown": 3600}
        raw = tiny_cfg(max_train_steps=12, checkpointing_steps=4, webhook_config=json.dumps([
            {"webhook_type": "raw", "callback_url": failing.url, **knobs},
            {"webhook_type": "discord", "callback_url": _closed_port_url(), **knobs}]))
        code, result, events = train(raw, home)
        assert code == 0 and result.status == "completed" and result.global_step == 12
        assert events[-1].type == "job.completed"
        # bounded: two events x two attempts reach the 503 receiver, then its breaker is open for the run
        assert failing.hits == 4
        assert {r["status"] for r in failing.requests} == {503}
        noted = [r.getMessage() for r in caplog.records
                 if r.name.startswith("simpletuner_webhooks") and r.levelno >= logging.INFO]
        assert len(noted) == 2, noted  # one state change (down) per target, nothing per event
        assert all("receiver is down" in line for line in noted)
        assert {line.split(": receiver")[0] for line in noted} == {
            f"raw webhook http://127.0.0.1:{failing.port}", f"discord webhook {_host(raw)}"}
    finally:
        failing.stop()


def _host(raw: dict[str, Any]) -> str:
    url = json.loads(raw["--webhook_config"])[1]["callback_url"]
    return url.rsplit("/", 1)[0]
