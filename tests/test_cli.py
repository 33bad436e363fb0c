"""The `simpletuner` CLI as a user runs it: real subprocesses, exit codes, one-line reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(home: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIMPLETUNER_HOME": str(home), "SIMPLETUNER_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "simpletuner_core.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_plugins_and_models_listing(tmp_path: Path) -> None:
    out = run(tmp_path, "plugins", "--json")
    assert out.returncode == 0
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert "register_model_families" in rows["pixart"]["hooks"]
    assert rows["pixart"]["distribution"].startswith("simpletuner-model-pixart")
    models = run(tmp_path, "models", "list")
    assert models.returncode == 0
    assert "pixart_sigma (alias: pixart)" in models.stdout
    assert "terminusresearch/pixart-900m-1024-ft-v0.6" in models.stdout and "tiny" in models.stdout


def test_demo_data_then_config_validate_then_train_env(tmp_path: Path, tiny_pixart_dir: Path) -> None:
    assert run(tmp_path, "demo-data", str(tmp_path / "datasets" / "toy"), "--count", "8").returncode == 0
    from simpletuner_core.config.environments import create_environment, save_dataloader, save_environment

    create_environment("toy", model_family="pixart_sigma", model_flavour="tiny", home=tmp_path)
    save_environment("toy", {"--pretrained_model_name_or_path": str(tiny_pixart_dir), "--max_train_steps": 6,
                             "--train_batch_size": 2, "--checkpointing_steps": 3}, merge=True, home=tmp_path)
    save_dataloader("toy", [
        {"id": "toy", "type": "local", "dataset_type": "image", "instance_data_dir": "../../datasets/toy",
         "resolution": 64, "resolution_type": "pixel_area", "crop": True, "crop_style": "center"},
        {"id": "toy-text", "type": "local", "dataset_type": "text_embeds", "default": True},
    ], home=tmp_path)
    check = run(tmp_path, "config", "validate", "--env", "toy")
    assert check.returncode == 0, check.stderr
    assert "Configuration Valid" in check.stdout and "64x64: 8" in check.stdout
    trained = run(tmp_path, "train", "--env", "toy")
    assert trained.returncode == 0, trained.stderr
    assert "completed at step 6" in trained.stdout
    assert (tmp_path / "output" / "toy" / "model_index.json").exists()
    assert (tmp_path / "output" / "toy" / "checkpoint-3" / "manifest.json").exists()
    assert (tmp_path / "cache" / "vae" / "toy").is_dir()  # default cache dirs live in the state directory


@pytest.mark.parametrize(("args", "needle"), [
    (("train", "--env", "nope"), "unknown environment 'nope'"),
    (("train",), "give exactly one of --env NAME and --config FILE.json"),
    (("train", "--config", "/does/not/exist.json"), "cannot read /does/not/exist.json"),
    (("train", "--env", "../etc"), "invalid environment name"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    out = run(tmp_path, *args)
    assert out.returncode == 2
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_invalid_config_lists_every_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"--model_family": "pixart", "--learnig_rate": 1, "--max_train_steps": 0}))
    out = run(tmp_path, "train", "--config", str(config))
    assert out.returncode == 2
    assert "learnig_rate: unknown config key (did you mean 'learning_rate'?)" in out.stderr
    assert "invalid configuration (4 error(s))" in out.stderr.splitlines()[-1]
    not_json = tmp_path / "x.json"
    not_json.write_text("{nope")
    assert "is not valid JSON" in run(tmp_path, "train", "--config", str(not_json)).stderr


def test_impossible_plan_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    assert run(tmp_path, "demo-data", str(tmp_path / "imgs"), "--count", "3").returncode == 0
    dataloader = tmp_path / "dl.json"
    dataloader.write_text(json.dumps([{"id": "d", "type": "local", "instance_data_dir": str(tmp_path / "imgs"),
                                       "resolution": 64, "resolution_type": "pixel_area"}]))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"--model_family": "pixart_sigma", "--model_flavour": "tiny",
                                  "--output_dir": str(tmp_path / "o"), "--data_backend_config": str(dataloader),
                                  "--max_train_steps": 5, "--train_batch_size": 4}))
    out = run(tmp_path, "config", "validate", "--config", str(config))
    assert out.returncode == 2 and "--train_batch_size" in out.stderr
    assert not (tmp_path / "cache" / "models").exists()  # nothing was built or loaded


def test_sigterm_stops_gracefully_with_a_resumable_checkpoint(tmp_path: Path, tiny_pixart_dir: Path,
                                                              demo_images: Path) -> None:
    import signal
    import time

    from simpletuner_core.events.log import read_events
    from simpletuner_core.training.checkpoint import resolve_resume

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import tiny_config

    config = tmp_path / "c.json"
    config.write_text(json.dumps(tiny_config(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=100000,
                                             checkpointing_steps=0)))
    env = {**os.environ, "SIMPLETUNER_HOME": str(tmp_path), "SIMPLETUNER_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "simpletuner_core.cli", "train", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        logs = list((tmp_path / "jobs").glob("*/events.jsonl"))
        if logs and any(e.type == "training.status" for e in read_events(logs[0])):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = read_events(logs[0])
    stopped = [e for e in events if e.type == "job.stopped"]
    assert stopped and "stopped at step" in out
    checkpoint = resolve_resume("latest", tmp_path / "output")
    assert checkpoint is not None and str(checkpoint) == stopped[0].data["checkpoint"]
