"""The tutorial's Flux Kontext LyCORIS example, scaled to the offline ``tiny-kontext`` flavour (CPU, seconds).

:data:`EXAMPLE_CONFIG` / :data:`EXAMPLE_DATALOADER` keep the tutorial's knobs (optimi-lion, int8-quanto, LyCORIS,
lora_rank 16, lora_dropout 0.05, combined conditioning sampling, clip_skip 2, the three-dataset dataloader) with
sizes, steps and learning rate scaled to the tiny model. Paths are core's example placeholders
(``{datasets_dir}``, ``{cache_dir}``), filled when an environment is created, so the template names no machine.
The plugin ships it through ``register_config_examples`` as ``tiny-kontext``. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simpletuner_core.records import ConfigExample

EXAMPLE_NAME = "tiny-kontext"
#: Dataset folders the example reads, under ``datasets_dir``: targets with instructions, and their references.
EDIT_DATASET = "kontext-edit"
REFERENCE_DATASET = "kontext-reference"

EXAMPLE_CONFIG: dict[str, Any] = {
    "--model_family": "flux", "--model_flavour": "tiny-kontext", "--model_type": "lora", "--lora_type": "lycoris",
    "--train_batch_size": 1, "--gradient_accumulation_steps": 2, "--learning_rate": 0.003,
    "--optimizer": "optimi-lion", "--lr_scheduler": "cosine", "--lr_warmup_steps": 3, "--max_train_steps": 30,
    "--num_train_epochs": 0, "--checkpoint_step_interval": 10, "--validation_prompt": "make the square blue",
    "--validation_guidance": 2.5, "--validation_resolution": "64x64", "--validation_num_inference_steps": 2,
    "--validation_step_interval": 30, "--seed": 777, "--resume_from_checkpoint": "latest",
    "--base_model_precision": "int8-quanto", "--dataloader_prefetch": True, "--report_to": "none",
    "--grad_clip_method": "norm", "--lora_rank": 16, "--lora_dropout": 0.05, "--conditioning_multidataset_sampling": "combined", "--clip_skip": 2,
}
EXAMPLE_DATALOADER: list[dict[str, Any]] = [
    {"id": "kontext-edit", "type": "local", "dataset_type": "image",
     "instance_data_dir": "{datasets_dir}/" + EDIT_DATASET, "conditioning_data": ["kontext-reference"],
     "resolution": 64, "resolution_type": "pixel_area", "caption_strategy": "textfile", "minimum_image_size": 32,
     "maximum_image_size": 128, "target_downsample_size": 64, "cache_dir_vae": "{cache_dir}/vae/edit",
     "crop": True, "crop_style": "random", "crop_aspect": "square"},
    {"id": "kontext-reference", "type": "local", "dataset_type": "conditioning",
     "instance_data_dir": "{datasets_dir}/" + REFERENCE_DATASET, "conditioning_type": "reference_strict",
     "resolution": 64, "resolution_type": "pixel_area", "cache_dir_vae": "{cache_dir}/vae/reference"},
    {"id": "kontext-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
     "cache_dir": "{cache_dir}/text"},
]


def tiny_kontext_example() -> ConfigExample:
    """The template record (what ``register_config_examples`` ships)."""
    return ConfigExample(
        name=EXAMPLE_NAME,
        description="The tutorial's Flux Kontext LyCORIS LoRA on the random-init tiny-kontext model, 64 px on CPU "
                    f"(edit images with .txt instructions in datasets_dir/{EDIT_DATASET}, references with the same "
                    f"file names in datasets_dir/{REFERENCE_DATASET}).",
        config=EXAMPLE_CONFIG, dataloader=EXAMPLE_DATALOADER, datasets=(EDIT_DATASET, REFERENCE_DATASET))


def write_tiny_kontext_example(home: Path, name: str = EXAMPLE_NAME, *, pairs: int = 8,
                               overrides: dict[str, Any] | None = None) -> Path:
    """Create environment ``name`` from the template under ``home`` and write demo pairs into its dataset
    folders (``home/datasets/...``); ``overrides`` (``--key`` form) are merged into the saved config."""
    from simpletuner_core.config.environments import save_environment
    from simpletuner_core.config.examples import create_from_example
    from simpletuner_core.demo_data import write_demo_pairs

    home = Path(home)
    datasets = home / "datasets"
    write_demo_pairs(datasets / EDIT_DATASET, datasets / REFERENCE_DATASET, count=pairs, size=64)
    directory = create_from_example(name, tiny_kontext_example(), home=home, datasets_dir=datasets)
    if overrides:
        save_environment(name, overrides, merge=True, home=home)
    return directory
