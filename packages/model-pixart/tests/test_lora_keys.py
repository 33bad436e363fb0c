"""Golden LoRA key set for PixArt: a change in the saved keys breaks every downstream loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config import validate
from simpletuner_core.plugins import get_registry
from simpletuner_core.training.lora_io import read_lora, save_adapter

GOLDEN_MODULES = [f"transformer.transformer_blocks.{i}.{attn}.{proj}" for i in range(2)
                  for attn in ("attn1", "attn2") for proj in ("to_k", "to_out.0", "to_q", "to_v")]
GOLDEN = sorted(f"{m}.lora_{ab}.weight" for m in GOLDEN_MODULES for ab in "AB")


def test_diffusers_keys_are_golden_and_comfyui_is_refused(home: Path, tiny_cfg: Any) -> None:
    import torch
    from safetensors import safe_open

    from simpletuner_pixart.trainer import PixArtSigmaTrainer

    cfg = validate(tiny_cfg(model_type="lora", lora_rank=4))
    registry = get_registry()
    family = registry.family("pixart")
    trainer = PixArtSigmaTrainer(cfg, family, home)
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    adapter = registry.adapters.get("standard").apply(trainer.trainable(), cfg, trainer.lora_targets)
    path = save_adapter(adapter, family, registry.lora_formats.get("diffusers"), home / "out")
    with safe_open(str(path), "pt") as fh:
        assert sorted(fh.keys()) == GOLDEN
    fmt, state, alpha, meta = read_lora(path, family, registry)
    assert (fmt, alpha, meta["model_family"]) == ("diffusers", 4, "pixart_sigma") and len(state) == len(GOLDEN)
    with pytest.raises(ValueError, match="has no comfyui LoRA key map"):
        save_adapter(adapter, family, registry.lora_formats.get("comfyui"), home / "comfy")
