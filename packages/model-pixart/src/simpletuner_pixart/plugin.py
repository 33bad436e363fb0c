"""PixArt Sigma family plugin. Light on purpose: torch and diffusers load only when training starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from simpletuner_core import hookimpl
from simpletuner_core.records import ConfigExample, Flavour, ModelFamily


def _trainer() -> type:
    from simpletuner_pixart.trainer import PixArtSigmaTrainer

    return PixArtSigmaTrainer


def _build_tiny(cache_dir: Path) -> Path:
    from simpletuner_pixart.tiny import ensure_tiny_pipeline

    return ensure_tiny_pipeline(cache_dir)


def _memory_shapes(flavour: str, config: object = None) -> object:
    from simpletuner_pixart.shapes import architecture

    return architecture(flavour, config)


FLAVOURS = (
    Flavour("900M-1024-v0.6", "terminusresearch/pixart-900m-1024-ft-v0.6", "PixArt Sigma 900M, 1024 px fine-tune."),
    Flavour("600M-1024", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", "PixArt Sigma XL 600M, 1024 px."),
    Flavour("600M-512", "PixArt-alpha/PixArt-Sigma-XL-2-512-MS", "PixArt Sigma XL 600M, 512 px."),
    Flavour("tiny", None, "Random-init miniature built offline (CPU demos and tests).", build=_build_tiny),
)


@hookimpl
def register_model_families(register: Callable[[ModelFamily], None]) -> None:
    register(ModelFamily(
        name="pixart_sigma",
        aliases=("pixart",),
        trainer=_trainer,
        flavours={f.name: f for f in FLAVOURS},
        model_types=("full", "lora"),
        adapter_types=("standard", "lycoris"),
        default_flavour="600M-1024",
        description="PixArt Sigma (DiT, T5 text encoder, DDPM ε or v-prediction, learned sigma).",
        pipeline="PixArtSigmaPipeline",
        size_multiple=16,
        features=("snr_gamma", "rescale_betas_zero_snr"),
        memory_shapes=_memory_shapes,
    ))


#: The tiny CPU template behind the README demo: 64 px, the bundled demo images in ``datasets_dir/pixart-demo``.
TINY_EXAMPLE_CONFIG = {
    "--model_family": "pixart_sigma", "--model_flavour": "tiny", "--model_type": "full",
    "--train_batch_size": 4, "--gradient_accumulation_steps": 1, "--learning_rate": 1e-3,
    "--optimizer": "adamw", "--lr_scheduler": "constant_with_warmup", "--lr_warmup_steps": 10,
    "--max_train_steps": 150, "--num_train_epochs": 0, "--seed": 42, "--checkpoint_step_interval": 50,
    "--checkpoints_total_limit": 2, "--validation_prompt": "a red square on a blue background",
    "--validation_step_interval": 150, "--validation_num_inference_steps": 8, "--validation_guidance": 3.0,
    "--validation_resolution": "64x64", "--report_to": "none",
    # the demo's result rests on these; SimpleTuner's defaults differ (norm clip at 2.0, checkpointing, dropout)
    "--max_grad_norm": 1.0, "--grad_clip_method": "norm", "--gradient_checkpointing": False,
    "--caption_dropout_probability": 0.0, "--validation_negative_prompt": None, "--resume_from_checkpoint": None,
}
TINY_EXAMPLE_DATALOADER = [
    {"id": "pixart-demo", "type": "local", "dataset_type": "image",
     "instance_data_dir": "{datasets_dir}/pixart-demo", "caption_strategy": "textfile",
     "resolution": 64, "resolution_type": "pixel_area", "crop": True, "crop_style": "center",
     "crop_aspect": "square", "cache_dir_vae": "{cache_dir}/vae"},
    {"id": "pixart-demo-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
     "cache_dir": "{cache_dir}/text"},
]


@hookimpl
def register_config_examples(register: Callable[[ConfigExample], None]) -> None:
    register(ConfigExample(
        name="tiny-pixart",
        description="Tiny random-init PixArt Sigma, full fine-tune at 64 px on CPU in about a minute "
                    "(upload images with .txt captions to datasets_dir/pixart-demo).",
        config=TINY_EXAMPLE_CONFIG, dataloader=TINY_EXAMPLE_DATALOADER, datasets=("pixart-demo",),
        demo_data=True))
