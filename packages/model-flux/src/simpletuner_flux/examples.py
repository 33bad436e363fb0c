"""The tutorial's Flux Kontext LyCORIS example, scaled to the offline ``tiny-kontext`` flavour (CPU, seconds).

:func:`tiny_kontext_example` returns the environment as plain JSON-able data (what a server can ship as a
template); :func:`write_tiny_kontext_example` creates it in a state directory, with demo edit/reference pairs.
Paths in the dataloader are relative to ``config/<env>/`` (the dataloader's own directory), so the example lives
entirely inside ``$SIMPLETUNER_HOME``; caches default to ``$SIMPLETUNER_HOME/cache``. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXAMPLE_NAME = "kontext-tiny-demo"
#: Where the pairs live, relative to the state directory.
EDIT_DIR = "datasets/kontext/edit"
REFERENCE_DIR = "datasets/kontext/reference"


def tiny_kontext_example(name: str = EXAMPLE_NAME, *, max_train_steps: int = 30) -> dict[str, Any]:
    """``{"name", "description", "tags", "environment", "config", "dataloader", "datasets"}``.

    ``environment`` holds the ``create_environment`` arguments (the tutorial's step 1), ``dataloader`` the three
    datasets (step 2), ``config`` the hyper-parameters in ``--key`` form (step 3) with the tutorial's knobs kept
    (optimi-lion, int8-quanto, lora_rank 16, lora_dropout 0.05, combined sampling, clip_skip 2) and sizes, steps
    and learning rate scaled to the tiny model. ``datasets`` names the folders to fill (state-dir relative).
    """
    up = "../../"  # from config/<env>/multidatabackend.json to the state directory
    return {
        "name": name,
        "description": "Flux Kontext LyCORIS LoRA on the offline tiny-kontext model (tutorial example, CPU)",
        "tags": ["flux", "kontext", "example"],
        "environment": {"model_family": "flux", "model_flavour": "tiny-kontext", "model_type": "lora",
                        "lora_type": "lycoris"},
        "config": {
            "--train_batch_size": 1, "--gradient_accumulation_steps": 2, "--learning_rate": 0.003,
            "--optimizer": "optimi-lion", "--lr_scheduler": "cosine", "--lr_warmup_steps": 3,
            "--max_train_steps": max_train_steps, "--num_train_epochs": 0, "--checkpointing_steps": 10,
            "--validation_prompt": "make the square blue", "--validation_guidance": 2.5,
            "--validation_resolution": "64x64", "--validation_num_inference_steps": 2,
            "--validation_steps": max_train_steps, "--seed": 777, "--resume_from_checkpoint": "latest",
            "--base_model_precision": "int8-quanto", "--dataloader_prefetch": True, "--report_to": "none",
            "--lora_rank": 16, "--lora_dropout": 0.05, "--conditioning_multidataset_sampling": "combined",
            "--clip_skip": 2, "--data_backend_config": f"{name}/multidatabackend.json",
        },
        "dataloader": [
            {"id": "kontext-edit", "type": "local", "dataset_type": "image", "instance_data_dir": up + EDIT_DIR,
             "conditioning_data": ["kontext-reference"], "resolution": 64, "resolution_type": "pixel_area",
             "caption_strategy": "textfile", "minimum_image_size": 32, "maximum_image_size": 128,
             "target_downsample_size": 64, "crop": True, "crop_style": "random", "crop_aspect": "square"},
            {"id": "kontext-reference", "type": "local", "dataset_type": "conditioning",
             "instance_data_dir": up + REFERENCE_DIR, "conditioning_type": "reference_strict", "resolution": 64,
             "resolution_type": "pixel_area"},
            {"id": "kontext-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True},
        ],
        "datasets": {"edit": EDIT_DIR, "reference": REFERENCE_DIR},
    }


def write_tiny_kontext_example(home: Path, name: str = EXAMPLE_NAME, *, max_train_steps: int = 30,
                               pairs: int = 8) -> dict[str, Any]:
    """Create the environment under ``home`` and write demo pairs into its dataset folders; returns the example."""
    from simpletuner_core.config.environments import create_environment, save_dataloader, save_environment
    from simpletuner_core.demo_data import write_demo_pairs

    example = tiny_kontext_example(name, max_train_steps=max_train_steps)
    home = Path(home)
    write_demo_pairs(home / EDIT_DIR, home / REFERENCE_DIR, count=pairs, size=64)
    create_environment(name, **example["environment"], description=example["description"], tags=example["tags"],
                       home=home)
    save_dataloader(name, example["dataloader"], home=home)
    save_environment(name, example["config"], merge=True, home=home)
    return example
