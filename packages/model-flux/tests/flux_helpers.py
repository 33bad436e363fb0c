"""Config builders and helpers shared by the flux tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def kontext_dataloader(home: Path, pairs: Path, conditioning_type: str = "reference_strict",
                       **edit_overrides: Any) -> Path:
    """The tutorial's three-dataset Kontext dataloader at 64 px."""
    path = home / "config" / "kontext.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([
        {"id": "kontext-edit", "type": "local", "dataset_type": "image", "instance_data_dir": str(pairs / "edit"),
         "conditioning_data": ["kontext-reference"], "resolution": 64, "resolution_type": "pixel_area",
         "caption_strategy": "textfile", "cache_dir_vae": str(home / "cache" / "vae" / "edit"), "crop": True,
         "crop_style": "center", "crop_aspect": "square", **edit_overrides},
        {"id": "kontext-reference", "type": "local", "dataset_type": "conditioning",
         "instance_data_dir": str(pairs / "reference"), "conditioning_type": conditioning_type, "resolution": 64,
         "resolution_type": "pixel_area", "cache_dir_vae": str(home / "cache" / "vae" / "reference")},
        {"id": "kontext-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(home / "cache" / "text")},
    ]))
    return path


#: The defaults the tests were written against, before SimpleTuner's became ours.
TEST_PINS = {"--optimizer": "adamw", "--lr_scheduler": "constant", "--max_grad_norm": 1.0,
             "--grad_clip_method": "norm", "--gradient_checkpointing": False,
             "--caption_dropout_probability": 0.0, "--checkpoints_total_limit": None, "--lora_dropout": 0.0,
             "--resume_from_checkpoint": None, "--validation_negative_prompt": None,
             "--validation_guidance": 4.5, "--validation_num_inference_steps": 20, "--disable_benchmark": True}


def flux_config(home: Path, model_dir: Path, dataloader: Path, flavour: str = "tiny",
                **overrides: Any) -> dict[str, Any]:
    """A wire-format LoRA config for a tiny Flux flavour."""
    from simpletuner_core.config.migrations import overlay

    return overlay({
        "--model_family": "flux", "--model_flavour": flavour, "--pretrained_model_name_or_path": str(model_dir),
        "--model_type": "lora", "--lora_rank": 4, "--output_dir": str(home / "output"),
        "--data_backend_config": str(dataloader), "--train_batch_size": 4, "--learning_rate": 1e-2,
        "--max_train_steps": 30, "--seed": 7, "--checkpoint_step_interval": 0, "--report_to": "none",
        **TEST_PINS,
    }, {k if k.startswith("--") else f"--{k}": v for k, v in overrides.items()})


def image_dataloader(home: Path, images: Path) -> Path:
    """One 64 px image dataset (the demo shapes) plus the text-embed cache."""
    path = home / "config" / "images.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([
        {"id": "toy", "type": "local", "dataset_type": "image", "instance_data_dir": str(images),
         "caption_strategy": "textfile", "resolution": 64, "resolution_type": "pixel_area", "crop": True,
         "crop_style": "center", "crop_aspect": "square", "cache_dir_vae": str(home / "cache" / "vae" / "toy")},
        {"id": "toy-text", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(home / "cache" / "text")},
    ]))
    return path


def train(raw: dict[str, Any], home: Path, job_id: str = "job") -> tuple[int, Any, list[Any]]:
    """Validate ``raw`` and run it as a local job; ``(exit code, result, events)``."""
    from simpletuner_core.cli.jobs_local import run_job
    from simpletuner_core.config import validate
    from simpletuner_core.events.log import read_events
    from simpletuner_core.plugins import get_registry

    code, result = run_job(validate(raw), home, get_registry(), job_id=job_id)
    return code, result, read_events(home / "jobs" / job_id / "events.jsonl")


def transformer_inputs() -> dict[str, Any]:
    """Fixed random inputs for the tiny Flux transformer (4×4 packed latents, 8 text tokens)."""
    import torch

    from simpletuner_flux.packing import latent_ids

    g = torch.Generator().manual_seed(3)
    return {"hidden_states": torch.randn(1, 16, 16, generator=g), "timestep": torch.tensor([0.5]),
            "guidance": torch.tensor([1.0]), "pooled_projections": torch.randn(1, 32, generator=g),
            "encoder_hidden_states": torch.randn(1, 8, 32, generator=g), "txt_ids": torch.zeros(8, 3),
            "img_ids": latent_ids(4, 4)}
