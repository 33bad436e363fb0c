"""Random-init Flux and Flux Kontext pipelines built offline from config and cached on disk.

Real diffusers classes at miniature widths: a training step takes milliseconds on CPU, so the
tutorial's Kontext example and the tests run without weights or a network. Builds are deterministic (fixed seed)
and atomic (built in a temp dir, then renamed), so parallel processes agree on the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_VERSION = "v1"
TINY_PIXELS = 64
T5_MAX_LENGTH = 32

WORDS = ("a", "an", "the", "photo", "of", "on", "with", "and", "background", "red", "green", "blue", "yellow",
         "white", "black", "purple", "orange", "gray", "square", "circle", "triangle", "make", "turn", "it",
         "into", "change", "colour", "color", "to", "small", "large", "product", "cinematic", "<token>")


#: The tiny transformer's config (also what the memory plan reads: :mod:`simpletuner_flux.shapes`).
TRANSFORMER = {"patch_size": 1, "in_channels": 16, "out_channels": None, "num_layers": 1, "num_single_layers": 2,
               "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
               "pooled_projection_dim": 32, "guidance_embeds": True, "axes_dims_rope": (4, 4, 8)}
CLIP = {"hidden": 32, "intermediate": 64, "layers": 3}


def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE over the printable alphabet plus whole words from :data:`WORDS` (merged letter by letter)."""
    alphabet = [chr(c) for c in range(33, 127)]
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    for ch in alphabet:
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        if not word.isalpha():
            continue
        current = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + "</w>" if i == len(word) - 1 else ch
            merged = current + right
            if merged not in vocab:
                merges.append((current, right))
                vocab[merged] = len(vocab)
            current = merged
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def _clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    tok = CLIPTokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>")
    tok.model_max_length = 77  # the default (1e30) overflows inside FluxPipeline
    return tok


def t5_config() -> dict[str, int]:
    from simpletuner_core.training.tiny_parts import T5_TINY, t5_vocab_size

    return {"vocab": t5_vocab_size(WORDS), **T5_TINY}


def clip_config() -> dict[str, int]:
    return {"vocab": len(_clip_vocab()[0]), **CLIP}


#: The tiny VAE, without the quant convs (as Flux's).
def vae_config() -> dict[str, object]:
    from simpletuner_core.training.tiny_parts import VAE_TINY

    return {**VAE_TINY, "quant_conv": False}


def build_tiny_pipeline(kontext: bool = False) -> Any:
    """A Flux (dev-style, guidance-distilled) or Flux Kontext pipeline with random weights."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from simpletuner_core.training import tiny_parts

    torch.manual_seed(1 if kontext else 0)
    tokenizer, tokenizer_2 = _clip_tokenizer(), tiny_parts.t5_tokenizer(WORDS, max_length=T5_MAX_LENGTH)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=CLIP["hidden"], intermediate_size=CLIP["intermediate"],
        num_hidden_layers=CLIP["layers"],
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    text_encoder_2 = tiny_parts.t5_encoder(len(tokenizer_2))
    vae = tiny_parts.vae(TINY_PIXELS, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                         use_post_quant_conv=False)
    transformer = FluxTransformer2DModel(**TRANSFORMER)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096)
    cls = FluxKontextPipeline if kontext else FluxPipeline
    return cls(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
               text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)


def ensure_tiny_pipeline(cache_dir: Path, kontext: bool = False) -> Path:
    """Return a local diffusers directory holding the tiny pipeline, building it once."""
    from simpletuner_core.training.tiny_parts import ensure_built

    name = f"flux-{'kontext-' if kontext else ''}tiny-{TINY_VERSION}"
    return ensure_built(Path(cache_dir) / name, lambda: build_tiny_pipeline(kontext))
