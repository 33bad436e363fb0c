"""Core's interval gradient checkpointing and fixed-timestep (eval) loss on the tiny Flux transformer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from simpletuner_core.config import validate
from simpletuner_core.plugins import get_registry
from simpletuner_core.training import evaluation, grad_checkpointing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flux_helpers import flux_config


def _transformer(tiny_dir: Path) -> Any:
    from diffusers import FluxTransformer2DModel

    config = FluxTransformer2DModel.load_config(str(tiny_dir), subfolder="transformer")
    torch.manual_seed(0)  # deeper than the tiny model (1 + 2 blocks), so the interval shows
    return FluxTransformer2DModel.from_config({**config, "num_layers": 2, "num_single_layers": 4})


def _step(model: Any) -> tuple[float, list[torch.Tensor], int]:
    calls = [0]
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    for block in blocks:  # a pre-hook: torch ends a recomputation early, before post-hooks run
        block.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    g = torch.Generator().manual_seed(0)
    out = model(hidden_states=torch.randn(2, 16, 16, generator=g),
                encoder_hidden_states=torch.randn(2, 5, 32, generator=g), pooled_projections=torch.randn(2, 32, generator=g), timestep=torch.tensor([0.3, 0.7]),
                guidance=torch.tensor([3.5, 3.5]), img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(5, 3),
                return_dict=False)[0]
    loss = out.pow(2).mean()
    forward = calls[0]
    loss.backward()
    return float(loss), [p.grad.clone() for p in model.parameters() if p.grad is not None], calls[0] - forward


def test_interval_checkpointing_on_flux_blocks(tiny_flux_dir: Path) -> None:
    plain, sparse = _transformer(tiny_flux_dir), _transformer(tiny_flux_dir)
    grad_checkpointing.enable(plain, None)
    grad_checkpointing.enable(sparse, 2)
    loss_a, grads_a, recomputed_a = _step(plain)
    loss_b, grads_b, recomputed_b = _step(sparse)
    assert (recomputed_a, recomputed_b) == (6, 3)  # 2 double + 4 single blocks; every 2nd: 0, 2, 4
    assert loss_a == loss_b
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads_a, grads_b, strict=True))


def test_flux_loss_takes_fixed_timesteps_for_the_eval_loss(home: Path, tiny_flux_dir: Path) -> None:
    cfg = validate(flux_config(home, tiny_flux_dir, home / "none.json"))
    spec = get_registry().family("flux")
    family = spec.trainer()(cfg, spec, home / "models")
    family.load(torch.device("cpu"), torch.float32, lambda *_: None)
    assert evaluation.supports_fixed_timesteps(family)
    model = family.trainable()
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = family.encode_prompts(["a", "b"])

    def at(position: float) -> float:
        return evaluation.eval_loss(family, model, [[0]], lambda _: (latents, text), timesteps=1, seed=0,
                                    device=torch.device("cpu")) if position < 0 else float(
            family.loss(model, latents, text, timesteps=torch.full((2,), position)))

    assert at(-1) == at(-1)  # deterministic
    torch.manual_seed(0)
    low = at(0.1)
    torch.manual_seed(0)
    high = at(0.9)
    torch.manual_seed(0)
    assert low != high and at(0.1) == low  # the timestep is the one given, the noise the seeded one
