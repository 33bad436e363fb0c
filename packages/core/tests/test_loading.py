"""Cache identity of local model directories: every encoder a pipeline lists counts, the denoiser does not."""

from __future__ import annotations

import json
from pathlib import Path

from simpletuner_core.training.loading import weights_identity

FLUX_INDEX = {"_class_name": "FluxPipeline", "_diffusers_version": "0.32.0",
              "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
              "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
              "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
              "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}


def model_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps(FLUX_INDEX))
    for name in FLUX_INDEX:
        if not name.startswith("_"):
            (root / name).mkdir()
            (root / name / "weights.safetensors").write_bytes(b"0" * 8)
    return root


def test_every_listed_encoder_counts_and_the_denoiser_does_not(tmp_path: Path) -> None:
    root = model_dir(tmp_path / "flux")
    before = weights_identity(str(root))
    (root / "transformer" / "weights.safetensors").write_bytes(b"1" * 16)  # trained weights: caches stay valid
    assert weights_identity(str(root)) == before
    (root / "text_encoder_2" / "weights.safetensors").write_bytes(b"1" * 16)  # Flux's T5 makes prompt_embeds
    after_t5 = weights_identity(str(root))
    assert after_t5 != before
    (root / "tokenizer_2" / "spiece.model").write_bytes(b"x")
    assert weights_identity(str(root)) != after_t5


def test_the_pixart_components_keep_their_identity(tmp_path: Path) -> None:
    """vae, text_encoder, tokenizer in their historical order: existing PixArt caches stay valid."""
    import hashlib

    root = tmp_path / "pixart"
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "PixArtSigmaPipeline", "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5Tokenizer"],
        "transformer": ["diffusers", "PixArtTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    parts = []
    for sub in ("vae", "text_encoder", "tokenizer"):
        (root / sub).mkdir()
        f = root / sub / "w.bin"
        f.write_bytes(sub.encode())
        parts.append(f"{sub}/w.bin:{f.stat().st_size}:{int(f.stat().st_mtime)}")
    assert weights_identity(str(root)) == hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
