"""A config as SimpleTuner's server generates it loads and trains here, on both tiny families.

SimpleTuner writes every registry key into a generated config, most at their defaults, under its current names
(``checkpoint_step_interval``, ``checkpoint_epoch_interval: null``), with ``data_backend_config`` both with and
without dashes. Only the model and data are pointed at the offline tiny flavours.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import compat, validate, warnings_for
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_dataloader


def generated(overrides: dict[str, Any]) -> dict[str, Any]:
    """Every SimpleTuner key at its registry default, as ``--key`` (its generated config), then ``overrides``."""
    raw: dict[str, Any] = {}
    for key in compat.peer_keys().values():
        text = key.default.strip()
        if not text:
            value: Any = None
        elif key.type == "CHECKBOX":
            value = text.lower() == "true"
        elif key.type == "NUMBER":
            try:
                value = int(text) if text.lstrip("-").isdigit() else float(text)
            except ValueError:
                value = text
        else:
            value = text
        raw[f"--{key.name}"] = value
    raw.update({"--checkpoint_epoch_interval": None, "--use_ema": False, "--gradient_checkpointing": True,
                "--mixed_precision": "no"})  # bf16 autocast is SimpleTuner's GPU default; this test runs on CPU
    raw.update(overrides)
    raw["data_backend_config"] = raw["--data_backend_config"]
    return raw


def run(raw: dict[str, Any], home: Path) -> tuple[Any, list[Any], list[str]]:
    cfg = validate(raw)
    code, result = run_job(cfg, home, get_registry(), job_id="job")
    assert code == 0, result
    return result, read_events(home / "jobs" / "job" / "events.jsonl"), warnings_for(cfg, raw)


@pytest.mark.slow
def test_generated_pixart_config_trains(home: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    raw = generated({
        "--model_family": "pixart_sigma", "--model_flavour": "tiny",
        "--pretrained_model_name_or_path": str(tiny_pixart_dir), "--model_type": "full",
        "--output_dir": str(home / "output"), "--data_backend_config": str(write_dataloader(home, demo_images)),
        "--num_train_epochs": 0, "--max_train_steps": 6, "--learning_rate": 1e-3, "--seed": 3,
        "--checkpoint_step_interval": 3, "--resolution": 64,
    })
    result, events, notes = run(raw, home)
    assert result.status == "completed" and result.global_step == 6
    assert [e.data["step"] for e in events if e.type == "training.status"] == [1, 2, 3, 4, 5, 6]
    assert (home / "output" / "checkpoint-3").is_dir()  # checkpoint_step_interval, SimpleTuner's name, acts
    assert any("at their defaults have no effect here" in n for n in notes)


@pytest.mark.slow
def test_generated_flux_lora_config_trains(home: Path, demo_images: Path,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    from simpletuner_flux.tiny import ensure_tiny_pipeline

    model = ensure_tiny_pipeline(tmp_path_factory.mktemp("flux"))
    raw = generated({
        "--model_family": "flux", "--model_flavour": "tiny", "--pretrained_model_name_or_path": str(model),
        "--model_type": "lora", "--lora_rank": 4, "--lycoris_config": None,
        "--output_dir": str(home / "output"), "--data_backend_config": str(write_dataloader(home, demo_images)),
        "--num_train_epochs": 0, "--max_train_steps": 4, "--learning_rate": 1e-3, "--seed": 3,
        "--resolution": 64,
    })
    result, _, _ = run(raw, home)
    assert result.status == "completed" and result.global_step == 4
    assert list((home / "output").glob("*.safetensors"))


@pytest.mark.parametrize(("given", "expected"), [
    ({}, "a red square on a blue background"),  # our dataset default: textfile
    ({"--caption_strategy": "filename"}, "demo"),  # the filename strategy drops the numbering
    ({"--caption_strategy": "instance_prompt", "--instance_prompt": "a photo of sks"}, "a photo of sks"),
])
def test_config_wide_caption_strategy_is_the_dataset_default(home: Path, tiny_pixart_dir: Path,
                                                             demo_images: Path, given: dict[str, Any],
                                                             expected: str) -> None:
    from simpletuner_core.training.engine import plan_only

    dataloader = home / "config" / "dl.json"
    dataloader.parent.mkdir(parents=True, exist_ok=True)
    dataloader.write_text(json.dumps([
        {"id": "toy", "type": "local", "instance_data_dir": str(demo_images), "resolution": 64,
         "resolution_type": "pixel_area"},
        {"id": "text", "type": "local", "dataset_type": "text_embeds", "default": True},
    ]))
    cfg = validate({"--model_family": "pixart_sigma", "--model_flavour": "tiny", "--output_dir": str(home / "o"),
                    "--data_backend_config": str(dataloader), "--max_train_steps": 1, **given})
    captions = {Path(s.path).stem: s.caption for s in plan_only(cfg, home).samples}
    assert captions["demo_000"] == expected


def test_conditioning_sampling_without_conditioning_datasets_is_named(home: Path, tiny_pixart_dir: Path,
                                                                      demo_images: Path) -> None:
    from simpletuner_core.training.engine import plan_only

    raw = {"--model_family": "pixart_sigma", "--model_flavour": "tiny", "--output_dir": str(home / "o"),
           "--data_backend_config": str(write_dataloader(home, demo_images)), "--max_train_steps": 1}
    assert not [w for w in plan_only(validate(raw), home).warnings if "conditioning_multidataset" in w]
    warned = plan_only(validate({**raw, "--conditioning_multidataset_sampling": "combined"}), home).warnings
    assert "conditioning_multidataset_sampling=combined has no effect: no dataset has conditioning_data" in warned
