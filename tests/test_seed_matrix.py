"""One seed, one run: the same config run twice gives bit-identical weights, optimizer state and validation images.

Every family × model_type × lora_type, with and without an int8-quanto base, on one process; one case on two
processes (torchrun, gloo). Runs are tiny (3 steps, a checkpoint at step 2 for the optimizer state).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import validate
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import TEST_PINS, write_dataloader

pytestmark = pytest.mark.slow

CASES = [  # (family, model_type, lora_type, base_model_precision)
    ("pixart_sigma", "full", None, None),
    ("pixart_sigma", "lora", "standard", None),
    ("pixart_sigma", "lora", "lycoris", None),
    ("pixart_sigma", "lora", "standard", "int8-quanto"),
    ("flux", "full", None, None),
    ("flux", "lora", "standard", None),
    ("flux", "lora", "lycoris", None),
    ("flux", "lora", "lycoris", "int8-quanto"),
]


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simpletuner_flux.tiny import ensure_tiny_pipeline

    return ensure_tiny_pipeline(tmp_path_factory.mktemp("flux"))


def config(home: Path, model: Path, images: Path, family: str, model_type: str, lora_type: str | None,
           precision: str | None, output: Path) -> dict[str, Any]:
    raw: dict[str, Any] = {
        **TEST_PINS, "--model_family": family, "--model_flavour": "tiny", "--pretrained_model_name_or_path": str(model),
        "--model_type": model_type, "--output_dir": str(output),
        "--data_backend_config": str(write_dataloader(home, images)), "--train_batch_size": 2,
        "--learning_rate": 1e-3, "--max_train_steps": 3, "--seed": 11, "--checkpoint_step_interval": 2,
        "--report_to": "none", "--lora_dropout": 0.1, "--caption_dropout_probability": 0.2,
        "--validation_prompt": "a red square", "--validation_step_interval": 0, "--validation_resolution": "64x64",
        "--validation_num_inference_steps": 2, "--validation_disable_unconditional": True,
        "--disable_benchmark": True,
    }
    if model_type == "lora":
        raw.update({"--lora_type": lora_type, "--lora_rank": 4})
    if lora_type == "lycoris":
        spec = home / "lycoris.json"
        spec.write_text('{"algo": "lokr", "linear_dim": 4, "linear_alpha": 1, "factor": 4}')
        raw["--lycoris_config"] = str(spec)
    if precision:
        raw["--base_model_precision"] = precision
    return raw


def fingerprint(output: Path, events: list[Any]) -> dict[str, Any]:
    """Every tensor the run produced, and the validation images as sent."""
    out: dict[str, Any] = {}
    for path in sorted(output.rglob("*.safetensors")):
        for key, tensor in load_file(str(path)).items():
            out[f"{path.relative_to(output)}:{key}"] = tensor
    state = torch.load(str(output / "checkpoint-2" / "optimizer.bin"), map_location="cpu", weights_only=False)
    for group, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                out[f"optimizer:{group}:{name}"] = value
    out["images"] = [img for e in events if e.type == "validation.image" for img in e.data.get("images", [])]
    return out


def same(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if (not torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] != b[k])]


@pytest.mark.parametrize(("family", "model_type", "lora_type", "precision"), CASES)
def test_one_seed_one_run(home: Path, tiny_pixart_dir: Path, tiny_flux: Path, demo_images: Path, family: str,
                          model_type: str, lora_type: str | None, precision: str | None) -> None:
    model = tiny_pixart_dir if family == "pixart_sigma" else tiny_flux
    prints = []
    for name in ("first", "second"):
        raw = config(home, model, demo_images, family, model_type, lora_type, precision, home / name)
        code, result = run_job(validate(raw), home, get_registry(), job_id=name)
        assert code == 0 and result.global_step == 3, result
        prints.append(fingerprint(home / name, read_events(home / "jobs" / name / "events.jsonl")))
    first, second = prints
    assert len(first["images"]) == 1 and any(k.startswith("optimizer:") for k in first)
    assert same(first, second) == []


def test_one_seed_one_run_on_two_processes(tmp_path: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    from jobs_helpers import events_of, final, make_env, runner

    from simpletuner_core.jobs import models as m

    prints = []
    for name in ("first", "second"):
        home = tmp_path / name
        env = make_env(home, tiny_pixart_dir, demo_images, num_processes=2, train_batch_size=2, max_train_steps=3,
                       checkpoint_step_interval=2, model_type="lora", lora_rank=4, lora_dropout=0.1,
                       validation_prompt="a red square", validation_step_interval=0,
                       validation_num_inference_steps=2, validation_disable_unconditional=True,
                       disable_benchmark=True, seed=11)
        run, store = runner(home, devices=[])
        job_id = run.submit(env=env).job_id
        job = final(store, job_id, timeout=240)
        assert job.state == m.COMPLETED, (home / "jobs" / job_id / "trainer.log").read_text()[-3000:]
        prints.append(fingerprint(home / "output" / env, events_of(store, job_id, "validation.image")))
    assert same(*prints) == []
