"""A random-init PixArt Sigma pipeline built offline from config and cached on disk.

Small enough to train on two CPU cores in seconds, large enough to learn the demo set. The build is
deterministic (fixed seed) and atomic (built in a temp dir, then renamed), so parallel processes agree.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TINY_VERSION = "v1"
TINY_PIXELS = 64

WORDS = ("a", "an", "the", "photo", "of", "on", "with", "and", "background", "red", "green", "blue", "yellow",
         "white", "black", "purple", "orange", "cyan", "magenta", "gray", "square", "circle", "triangle",
         "stripe", "stripes", "dot", "small", "large", "test", "shot", "studio", "portrait", "<token>")


def _tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -1.0) for w in WORDS]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-<>▁"]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    tok.model_max_length = 16
    return tok


def build_tiny_pipeline():
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=0, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
        is_encoder_decoder=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=TINY_PIXELS, mid_block_add_attention=True)
    transformer = PixArtTransformer2DModel(
        num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=64, attention_bias=True, sample_size=TINY_PIXELS // 8, patch_size=2,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None, use_additional_conditions=False,
        caption_channels=32)
    return PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())


def ensure_tiny_pipeline(cache_dir: Path) -> Path:
    """Return a local diffusers directory holding the tiny pipeline, building it once."""
    target = Path(cache_dir) / f"pixart-sigma-tiny-{TINY_VERSION}"
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_pipeline().save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target
