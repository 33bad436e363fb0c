"""A random-init PixArt Sigma pipeline built offline from config and cached on disk.

Small enough to train on two CPU cores in seconds, large enough to learn the demo set. The build is
deterministic (fixed seed) and atomic (built in a temp dir, then renamed), so parallel processes agree.
"""

from __future__ import annotations

from pathlib import Path

TINY_VERSION = "v1"
TINY_PIXELS = 64

WORDS = ("a", "an", "the", "photo", "of", "on", "with", "and", "background", "red", "green", "blue", "yellow",
         "white", "black", "purple", "orange", "cyan", "magenta", "gray", "square", "circle", "triangle",
         "stripe", "stripes", "dot", "small", "large", "test", "shot", "studio", "portrait", "<token>")


#: The tiny transformer's config (also what the memory plan reads: :mod:`simpletuner_pixart.shapes`).
TRANSFORMER = {"num_attention_heads": 4, "attention_head_dim": 16, "in_channels": 4, "out_channels": 8,
               "num_layers": 2, "cross_attention_dim": 64, "attention_bias": True, "sample_size": TINY_PIXELS // 8,
               "patch_size": 2, "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
               "norm_type": "ada_norm_single", "norm_elementwise_affine": False, "norm_eps": 1e-6,
               "interpolation_scale": None, "use_additional_conditions": False, "caption_channels": 32}
TEXT_TOKENS = 16


def build_tiny_pipeline():
    import torch
    from diffusers import (
        DPMSolverMultistepScheduler,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )

    from simpletuner_core.training import tiny_parts

    torch.manual_seed(0)
    tokenizer = tiny_parts.t5_tokenizer(WORDS, max_length=TEXT_TOKENS)
    text_encoder = tiny_parts.t5_encoder(len(tokenizer))
    vae = tiny_parts.vae(TINY_PIXELS)
    transformer = PixArtTransformer2DModel(**TRANSFORMER)
    return PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())


def ensure_tiny_pipeline(cache_dir: Path) -> Path:
    """Return a local diffusers directory holding the tiny pipeline, building it once."""
    from simpletuner_core.training.tiny_parts import ensure_built

    return ensure_built(Path(cache_dir) / f"pixart-sigma-tiny-{TINY_VERSION}", build_tiny_pipeline)
