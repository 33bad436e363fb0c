"""Flux keys that used to be accepted and then ignored: true CFG with the negative prompt, prediction_type and
LyCORIS target names."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config import ConfigInvalid, validate, warnings_for
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flux_helpers import flux_config, image_dataloader


def _cfg(home: Path, tiny_flux_dir: Path, **keys: Any) -> Any:
    return validate(flux_config(home, tiny_flux_dir, image_dataloader(home, home / "images"), **keys))


def test_true_cfg_with_the_negative_prompt_changes_the_validation_pixels(home: Path, tiny_flux_dir: Path) -> None:
    import numpy as np
    import torch

    from simpletuner_flux.trainer import FluxTrainer

    def render(**keys: Any) -> Any:
        config = _cfg(home, tiny_flux_dir, validation_prompt="a red square", validation_num_inference_steps=2,
                      validation_resolution="64x64", validation_seed=5, **keys)
        trainer = FluxTrainer(config, get_registry().family("flux"), home)
        trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
        (image,) = trainer.validation_images(trainer.trainable(), config)
        return np.asarray(image, dtype=np.int16)

    off = render(validation_negative_prompt="green circles", validation_guidance_real=1.0)
    off_other = render(validation_negative_prompt="a blue sky", validation_guidance_real=1.0)
    on = render(validation_negative_prompt="green circles", validation_guidance_real=2.0)
    on_other = render(validation_negative_prompt="a blue sky", validation_guidance_real=2.0)
    assert np.array_equal(off, off_other)  # at 1.0 the negative prompt is not used, as the warning says
    assert np.abs(on - off).max() > 0 and np.abs(on - on_other).max() > 0


def test_a_negative_prompt_without_true_cfg_is_named(home: Path, tiny_flux_dir: Path) -> None:
    def notes(**keys: Any) -> list[str]:
        return [n for n in warnings_for(_cfg(home, tiny_flux_dir, **keys)) if "validation_negative_prompt" in n]

    assert "validation_guidance_real > 1" in notes(validation_negative_prompt="green circles")[0]
    assert notes(validation_negative_prompt="green circles", validation_guidance_real=3.0) == []
    assert notes(validation_negative_prompt="blurry, cropped, ugly") == []  # the default is not the user's choice
    assert notes(validation_negative_prompt=None) == []


@pytest.mark.parametrize("value", ["epsilon", "v_prediction"])
def test_a_ddpm_prediction_type_is_refused_for_flux(home: Path, tiny_flux_dir: Path, value: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        _cfg(home, tiny_flux_dir, prediction_type=value)
    errors = {e.path: e.message for e in info.value.errors}
    assert list(errors) == ["prediction_type"] and "flux trains with flow matching" in errors["prediction_type"]
    assert _cfg(home, tiny_flux_dir, prediction_type="flow_matching").prediction_type == "flow_matching"


def test_lycoris_on_flux_adapts_only_the_named_modules(home: Path, tiny_flux_dir: Path) -> None:
    from diffusers import FluxTransformer2DModel

    from simpletuner_flux.trainer import FluxTrainer

    def adapted(**keys: Any) -> set[str]:
        model = FluxTransformer2DModel.from_pretrained(tiny_flux_dir / "transformer")
        cfg = _cfg(home, tiny_flux_dir, lora_type="lycoris", **keys)
        handle = get_registry().adapters.get("lycoris").apply(model, cfg, FluxTrainer.targets_for(cfg),
                                                               FluxTrainer.lycoris_presets)
        names = {lora.lora_name for lora in handle.checkpoint_module.loras}
        return {n for n, _ in model.named_modules() if "lycoris_" + n.replace(".", "_") in names}

    whole_blocks = adapted()  # the family's default preset: every linear layer of every block
    assert any(n.endswith(".ff.net.2") for n in whole_blocks)
    named = adapted(lora_target_modules="to_k,add_k_proj")
    assert named == {n for n in whole_blocks if n.endswith((".to_k", ".add_k_proj"))} and named
