"""A run without ``seed`` draws one and records it (job.running event, checkpoint manifest); that seed, set in the
config, reproduces the run's weights bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import validate
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry


def _run(tiny_cfg: Any, home: Path, name: str, **keys: Any) -> tuple[int, dict[str, Any]]:
    """Train a 2-step LoRA as job ``name``; (the seed its job.running event records, its adapter weights)."""
    raw = tiny_cfg(model_type="lora", lora_rank=4, max_train_steps=2, learning_rate=1e-2,
                   output_dir=str(home / name), **keys)
    if "seed" not in keys:
        del raw["--seed"]
    code, _ = run_job(validate(raw), home, get_registry(), job_id=name)
    assert code == 0
    (running,) = [e for e in read_events(home / "jobs" / name / "events.jsonl") if e.type == "job.running"]
    (path,) = list((home / name).glob("*.safetensors"))
    return running.data["seed"], load_file(str(path))


@pytest.fixture
def wide_random_crops(tiny_cfg: Any, tmp_path: Path) -> Any:
    """Configs on 160x96 images cut to random 64 px squares: the crops, too, depend on the seed."""
    from PIL import Image

    from simpletuner_core.demo_data import write_demo_dataset

    images = tmp_path / "wide"
    write_demo_dataset(images, count=8, size=64)
    for path in images.glob("*.png"):
        Image.open(path).resize((160, 96)).save(path)

    def make(**keys: Any) -> dict[str, Any]:
        raw = tiny_cfg(**keys)
        dataloader = Path(raw["--data_backend_config"])
        entries = json.loads(dataloader.read_text())
        entries[0].update(instance_data_dir=str(images), crop_style="random")
        dataloader.write_text(json.dumps(entries))
        return raw

    return make


@pytest.mark.parametrize("crops", ["center", "random"])
def test_a_drawn_seed_is_recorded_and_reproduces_the_run(home: Path, tiny_cfg: Any, wide_random_crops: Any,
                                                         crops: str) -> None:
    if crops == "random":
        tiny_cfg = wide_random_crops
    seed_a, first = _run(tiny_cfg, home, "a")
    seed_b, second = _run(tiny_cfg, home, "b")
    assert isinstance(seed_a, int) and seed_a != seed_b  # two draws (2^31 values: a clash is a 1 in 2e9 event)
    assert any(not (first[k] == second[k]).all() for k in first)
    seed_c, again = _run(tiny_cfg, home, "c", seed=seed_a)
    assert seed_c == seed_a and first.keys() == again.keys() and len(first) > 4
    assert all((first[k] == again[k]).all() for k in first)
