"""Commands to a running trainer process, the event log read while it is written, and the `jobs` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs_helpers import events_of, final, make_env, runner, wait_for

from simpletuner_core.jobs import models as m

pytestmark = pytest.mark.slow


def test_checkpoint_and_validate_now_and_a_reader_that_reconnects(tmp_path: Path, tiny_pixart_dir: Path,
                                                                   demo_images: Path) -> None:
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=100000, checkpointing_steps=0,
                   validation_prompt="a red square", validation_steps=0, validation_num_inference_steps=2)
    run, store = runner(tmp_path, devices=[])
    job_id = run.submit(env=env).job_id
    first = wait_for(lambda: events_of(store, job_id, "training.status"))[0]
    # a reader that drops and reconnects from the last id it saw, while the trainer keeps writing
    seen: list[int] = []
    after = 0
    while len(seen) < 60:
        batch = store.wait_events(job_id, after, timeout=30.0, limit=7)
        assert batch, "no events for 30 s while training"
        seen.extend(e.id for e in batch)
        after = batch[-1].id
    step_before = store.read_events(job_id)[-1].id
    run.command(job_id, "checkpoint")
    saved = wait_for(lambda: events_of(store, job_id, "checkpoint.saved"))[0]
    steps_then = [e.data["step"] for e in events_of(store, job_id, "training.status") if e.id < saved.id]
    assert saved.data["step"] == steps_then[-1]  # saved right after a step, not mid micro-batch
    assert Path(saved.data["path"], "manifest.json").exists()
    run.command(job_id, "validate")
    image = wait_for(lambda: events_of(store, job_id, "validation.image"))[0]
    assert image.data["images"][0]["src"].startswith("data:image/png;base64,")
    assert events_of(store, job_id, "validation.started")[0].data["forced"] is True
    run.command(job_id, "cancel")
    assert run.command(job_id, "cancel").id == job_id  # idempotent
    assert final(store, job_id).state == m.CANCELLED
    everything = [e.id for e in store.read_events(job_id)]
    start = everything.index(first.id)
    assert seen == everything[start + 1:start + 1 + len(seen)] or seen == everything[:len(seen)]
    assert len(set(seen)) == len(seen) and step_before > 0


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIMPLETUNER_HOME": str(home), "SIMPLETUNER_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "simpletuner_core.cli", "jobs", *args], env=env,
                          capture_output=True, text=True, timeout=240, check=False)


def test_jobs_cli_submit_list_show_logs(tmp_path: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=6, seed=None)  # a seed is drawn
    dry = cli(tmp_path, "submit", env, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["would"] == "start" and report["cpu_slot"] and report["config"]["--max_train_steps"] == 6
    assert report["plan"]["buckets"] == {"64x64": 12}
    submitted = cli(tmp_path, "submit", env, "--json")
    assert submitted.returncode == 0, submitted.stderr
    result = json.loads(submitted.stdout)
    assert result["success"] and result["status"] == "running" and result["queue_position"] is None
    job_id = result["job_id"]
    follow = cli(tmp_path, "logs", job_id, "-f")  # returns when the job ends
    assert follow.returncode == 0
    assert "step 6/6" in follow.stdout and "job.completed" in follow.stdout
    listed = cli(tmp_path, "list", "--json")
    assert [j["state"] for j in json.loads(listed.stdout)] == ["completed"]
    shown = json.loads(cli(tmp_path, "show", job_id).stdout)
    assert shown["id"] == job_id and shown["output_dir"].endswith("output/toy")
    running = next(e for e in (json.loads(x) for x in cli(tmp_path, "logs", job_id, "--json").stdout.splitlines())
                   if e["event_type"] == "job.running")
    assert isinstance(shown["seed"], int) and shown["seed"] == running["data"]["seed"]  # the drawn seed, shown
    env_vars = {**os.environ, "SIMPLETUNER_HOME": str(tmp_path)}
    effective = subprocess.run([sys.executable, "-m", "simpletuner_core.cli", "config", "show", "--job", job_id,
                                "--json"], env=env_vars, capture_output=True, text=True, timeout=120, check=False)
    assert effective.returncode == 0, effective.stderr
    table = json.loads(effective.stdout)
    assert table["seed"] == {"value": shown["seed"], "source": "drawn"}
    assert table["max_train_steps"]["value"] == 6
    raw = cli(tmp_path, "logs", job_id, "--json", "--since", "3")
    lines = [json.loads(line) for line in raw.stdout.splitlines()]  # the wire form: SimpleTuner's envelope
    ids = [int(line["id"]) for line in lines]
    assert ids and min(ids) > 3 and all(line["message_type"] == line["type"] for line in lines)
    assert lines[-1]["type"] == "training.status" and lines[-1]["status"] == "completed"


@pytest.mark.parametrize(("args", "needle"), [
    (("show", "nope"), "unknown job 'nope'"),
    (("stop", "nope"), "unknown job 'nope'"),
    (("submit", "missing-env"), "unknown environment 'missing-env'"),
    (("submit", "x", "--gpu-ids", "a,b"), "--gpu-ids expects comma-separated integers"),
])
def test_jobs_cli_errors_exit_2_with_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    out = cli(tmp_path, *args)
    assert out.returncode == 2 and needle in out.stderr and len(out.stderr.strip().splitlines()) == 1
