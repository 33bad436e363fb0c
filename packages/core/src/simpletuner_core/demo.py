"""``simpletuner demo``: demo data + the tiny PixArt environment + a real CPU training + a load-back check."""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path

DEMO_ENV = "demo-pixart"


def demo_config(home: Path, steps: int) -> dict[str, object]:
    return {
        "--model_family": "pixart_sigma", "--model_flavour": "tiny", "--model_type": "full",
        "--output_dir": str(home / "output" / DEMO_ENV), "--data_backend_config": f"{DEMO_ENV}/multidatabackend.json",
        "--train_batch_size": 4, "--gradient_accumulation_steps": 1, "--learning_rate": 1e-3,
        "--optimizer": "adamw", "--lr_scheduler": "constant_with_warmup", "--lr_warmup_steps": 10,
        "--max_train_steps": steps, "--num_train_epochs": 0, "--seed": 42, "--checkpoint_step_interval": 50,
        "--checkpoints_total_limit": 2, "--validation_prompt": "a red square on a blue background",
        "--validation_step_interval": steps, "--validation_num_inference_steps": 8, "--validation_guidance": 3.0,
        "--validation_resolution": "64x64", "--report_to": "none",
        # what the demo's printed result rests on, pinned against SimpleTuner's defaults (norm clip at 2.0, ...)
        "--max_grad_norm": 1.0, "--grad_clip_method": "norm", "--gradient_checkpointing": False,
        "--caption_dropout_probability": 0.0, "--validation_negative_prompt": None, "--resume_from_checkpoint": None,
        "--disable_benchmark": True,
    }


def demo_dataloader(home: Path) -> list[dict[str, object]]:
    return [
        {"id": "demo-images", "type": "local", "dataset_type": "image",
         "instance_data_dir": str(home / "datasets" / "demo"), "caption_strategy": "textfile",
         "resolution": 64, "resolution_type": "pixel_area", "crop": True, "crop_style": "center",
         "crop_aspect": "square", "cache_dir_vae": str(home / "cache" / "vae" / "demo")},
        {"id": "demo-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(home / "cache" / "text" / "demo")},
    ]


def run_demo(home: Path, steps: int = 150) -> int:
    from simpletuner_core.cli.jobs_local import run_job
    from simpletuner_core.config import validate
    from simpletuner_core.config.environments import (
        create_environment,
        list_environments,
        save_dataloader,
        save_environment,
    )
    from simpletuner_core.demo_data import write_demo_dataset
    from simpletuner_core.plugins import get_registry

    home.mkdir(parents=True, exist_ok=True)
    write_demo_dataset(home / "datasets" / "demo", count=16, size=64)
    if DEMO_ENV not in list_environments(home):
        create_environment(DEMO_ENV, model_family="pixart_sigma", model_flavour="tiny", home=home,
                           description="Tiny PixArt Sigma trained on the bundled demo set (CPU).")
    save_environment(DEMO_ENV, demo_config(home, steps), home=home)
    save_dataloader(DEMO_ENV, demo_dataloader(home), home=home)
    output = home / "output" / DEMO_ENV
    shutil.rmtree(output, ignore_errors=True)  # idempotent: every run trains from scratch

    from simpletuner_core.config.environments import load_environment

    os.environ["SIMPLETUNER_HOME"] = str(home)
    cfg = validate(load_environment(DEMO_ENV, home)["config"])
    print(f"training environment {DEMO_ENV!r} ({steps} steps, tiny PixArt Sigma, CPU) in {home}")
    code, result = run_job(cfg, home, get_registry())
    if code != 0 or result is None:
        print("demo training failed; see the events log under", home / "jobs")
        return code or 1
    window = max(1, min(20, len(result.losses) // 4))
    first = statistics.fmean(result.losses[:window])
    last = statistics.fmean(result.losses[-window:])
    print(f"loss: mean of first {window} steps {first:.4f} -> mean of last {window} steps {last:.4f}")

    from diffusers import PixArtSigmaPipeline

    pipe = PixArtSigmaPipeline.from_pretrained(str(output))  # the real load path a user would take
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red square on a blue background", num_inference_steps=8, height=64, width=64,
                 use_resolution_binning=False, max_sequence_length=16, clean_caption=False).images[0]
    sample = output / "demo-sample.png"
    image.save(sample)
    print(f"trained weights (diffusers layout): {output}")
    print(f"reloaded with PixArtSigmaPipeline.from_pretrained and rendered {image.size[0]}x{image.size[1]}: {sample}")
    return 0 if last < first else 1
