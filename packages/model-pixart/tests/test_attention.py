"""attention_mechanism on PixArt: the choice reaches the loaded transformer, unsupported backends are refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config import ConfigInvalid, validate
from simpletuner_core.plugins import get_registry


def _load(raw: dict[str, Any], home: Path, logs: list[str]) -> Any:
    import torch

    from simpletuner_pixart.trainer import PixArtSigmaTrainer

    trainer = PixArtSigmaTrainer(validate(raw), get_registry().family("pixart_sigma"), home)
    trainer.load(torch.device("cpu"), torch.float32, logs.append)
    return trainer


@pytest.mark.parametrize("mechanism", ["diffusers", "sdpa"])
def test_sdpa_choices_reach_the_processors(home: Path, tiny_cfg: Any, mechanism: str) -> None:
    logs: list[str] = []
    trainer = _load(tiny_cfg(attention_mechanism=mechanism), home, logs)
    kinds = {type(p).__name__ for p in trainer.transformer.attn_processors.values()}
    assert kinds == {"AttnProcessor2_0"}  # torch SDPA
    assert any(line.startswith(f"attention_mechanism={mechanism}:") for line in logs), logs


def test_backends_pixart_processors_cannot_switch_to_are_refused(home: Path, tiny_cfg: Any) -> None:
    from simpletuner_core.training.attention import apply_attention

    trainer = _load(tiny_cfg(), home, [])
    with pytest.raises(ConfigInvalid) as err:
        apply_attention(trainer.transformer, "xformers")
    assert err.value.errors[0].path == "attention_mechanism" and "cannot switch backend" in str(err.value)
    if importlib.util.find_spec("sageattention") is None:
        with pytest.raises(ConfigInvalid) as err:
            validate(tiny_cfg(attention_mechanism="sageattention"))
        assert err.value.errors[0].path == "attention_mechanism" and "not installed" in str(err.value)
