"""Flux config keys checked by their effect on the loss inputs: each test fails when the key is ignored."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from simpletuner_core.config import validate
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flux_helpers import flux_config, image_dataloader


class Inputs(torch.nn.Module):
    """The real transformer, recording the packed noisy latents and the noise level (``timestep`` = sigma)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, **kwargs: Any) -> Any:
        self.seen.append((kwargs["hidden_states"].detach().clone(), kwargs["timestep"].detach().clone()))
        return self.inner(**kwargs)


def loaded(home: Path, model_dir: Path, images: Path, **keys: Any) -> Any:
    from simpletuner_flux.trainer import FluxTrainer

    raw = flux_config(home, model_dir, image_dataloader(home, images), **keys)
    trainer = FluxTrainer(validate(raw), get_registry().family("flux"), home / "cache" / "models")
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    return trainer


def test_flow_schedule_shift_shifts_the_drawn_sigmas(home: Path, tiny_flux_dir: Path, demo_images: Path) -> None:
    """With the same seed the uniform draw u is the same; shift s maps it to s*u / (1 + (s-1)*u)."""
    import attrs

    trainer = loaded(home, tiny_flux_dir, demo_images, flux_sigma_sampling="shifted", flow_schedule_shift=1.0)
    model = Inputs(trainer.trainable())
    latents = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = trainer.encode_prompts(["a red square"] * 16)
    drawn = {}
    for shift in (1.0, 3.0):
        trainer.cfg = attrs.evolve(trainer.cfg, flow_schedule_shift=shift)
        torch.manual_seed(0)
        with torch.no_grad():
            trainer.loss(model, latents, text)
        drawn[shift] = model.seen[-1][1]
    uniform = drawn[1.0]  # shift 1 is the identity: the raw uniform draw
    assert torch.allclose(drawn[3.0], 3 * uniform / (1 + 2 * uniform), atol=1e-6)
    assert float(drawn[3.0].mean()) > float(uniform.mean()) + 0.1  # more training at high noise


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_schedule_shift_is_unused_by_logit_normal_sampling(home: Path, tiny_flux_dir: Path,
                                                                demo_images: Path, shift: float) -> None:
    from simpletuner_flux.trainer import FluxTrainer

    raw = flux_config(home, tiny_flux_dir, image_dataloader(home, demo_images),
                      flux_sigma_sampling="logit_normal", flow_schedule_shift=shift)
    trainer = FluxTrainer(validate(raw), get_registry().family("flux"), home / "cache" / "models")
    torch.manual_seed(0)
    expected = torch.sigmoid(torch.randn(8))
    torch.manual_seed(0)
    assert torch.equal(trainer._sigmas(8, torch.device("cpu")), expected)


def test_noise_offset_adds_a_per_channel_constant_to_the_noise(home: Path, tiny_flux_dir: Path,
                                                               demo_images: Path) -> None:
    import attrs

    from simpletuner_flux.packing import unpack

    trainer = loaded(home, tiny_flux_dir, demo_images, noise_offset=0.0)
    model = Inputs(trainer.trainable())
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = trainer.encode_prompts(["a red square"] * 4)
    losses, noises = [], []
    for offset in (0.0, 0.5):
        trainer.cfg = attrs.evolve(trainer.cfg, noise_offset=offset)
        torch.manual_seed(0)
        with torch.no_grad():
            losses.append(float(trainer.loss(model, latents, text)))
        hidden, sigma = model.seen[-1]
        s = sigma.view(-1, 1, 1, 1)
        noises.append((unpack(hidden, 8, 8) - (1 - s) * latents) / s)  # noisy = (1 - s) * x + s * noise
    shift = noises[1] - noises[0]  # same seed: the same Gaussian draw, plus the offset term
    per_channel = shift.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(shift, per_channel.expand_as(shift), atol=1e-3)
    assert per_channel.abs().max() > 0.1
    assert losses[0] != losses[1]
