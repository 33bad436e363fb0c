"""Building blocks for the offline, random-init ``tiny`` flavours that every family ships.

The T5 tokenizer and encoder, the 8x VAE and the atomic on-disk cache are the same for PixArt and Flux (model
packages must not import each other, so they share them here). Heavy imports happen inside the functions.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

PIECES = "abcdefghijklmnopqrstuvwxyz0123456789,.-<>▁"


def t5_tokenizer(words: Iterable[str], max_length: int) -> Any:
    """A SentencePiece T5 tokenizer built in memory: whole ``words`` plus single characters as fallback."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -1.0) for w in words]
    vocab += [(c, -5.0) for c in PIECES]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    tok.model_max_length = max_length
    return tok


#: The tiny T5 encoder's widths (also read by the families' memory plans, torch-free).
T5_TINY = {"d_model": 32, "d_kv": 8, "d_ff": 64, "layers": 2, "heads": 4, "buckets": 8}
#: The tiny VAE's layout (``vae``), likewise.
VAE_TINY = {"block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "latent_channels": 4}


def t5_vocab_size(words: Iterable[str]) -> int:
    """Entries of :func:`t5_tokenizer`'s vocabulary: three specials, the words, the single pieces."""
    return 3 + len(list(words)) + len(PIECES)


def t5_encoder(vocab_size: int) -> Any:
    """A 2-layer, 32-wide T5 encoder (random weights from torch's global RNG)."""
    from transformers import T5Config, T5EncoderModel

    t = T5_TINY
    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=t["d_model"], d_kv=t["d_kv"], d_ff=t["d_ff"], num_layers=t["layers"],
        num_decoder_layers=0, num_heads=t["heads"], relative_attention_num_buckets=t["buckets"],
        relative_attention_max_distance=32, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def vae(sample_size: int, **extra: Any) -> Any:
    """An ``AutoencoderKL`` with the real models' 8x downsampling and 4 latent channels; ``extra`` sets the
    family's specifics (Flux: scaling/shift factors, no quant convs)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=VAE_TINY["block_out_channels"],
        layers_per_block=VAE_TINY["layers_per_block"], latent_channels=VAE_TINY["latent_channels"],
        norm_num_groups=4, sample_size=sample_size, mid_block_add_attention=True, **extra)


def ensure_built(target: Path, build: Callable[[], Any]) -> Path:
    """``target`` as a local diffusers directory, saving ``build()`` there once. Atomic: built in a temp dir and
    renamed, so parallel processes agree (the loser of a race discards its copy)."""
    target = Path(target)
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    build().save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target
