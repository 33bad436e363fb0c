"""PixArt Sigma family plugin. Light on purpose: torch and diffusers load only when training starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from simpletuner_core import hookimpl
from simpletuner_core.records import Flavour, ModelFamily


def _trainer() -> type:
    from simpletuner_pixart.trainer import PixArtSigmaTrainer

    return PixArtSigmaTrainer


def _build_tiny(cache_dir: Path) -> Path:
    from simpletuner_pixart.tiny import ensure_tiny_pipeline

    return ensure_tiny_pipeline(cache_dir)


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
    ))
