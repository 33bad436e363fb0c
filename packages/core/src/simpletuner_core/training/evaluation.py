"""Evaluation loss: the family's loss over held-out samples at fixed timesteps with fixed noise.

The samples come from dataloader entries with ``dataset_type: eval`` (see the preflight plan's
``eval_samples``). For the number to be comparable between steps it must depend on the weights only, so the
timesteps are ``eval_timesteps`` evenly spaced points of the schedule, the noise comes from a seed fixed per
(batch, timestep), dropout is off (``model.eval()``) and no gradients are kept. Torch's RNG state is restored
afterwards, so computing the eval loss never changes the training that follows.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any


def eval_positions(count: int) -> list[float]:
    """``count`` evenly spaced points in (0, 1): the middles of equal slices of the noise schedule."""
    return [(i + 0.5) / count for i in range(count)]


def supports_fixed_timesteps(family: Any) -> bool:
    """Whether the family trainer's ``loss`` takes ``timesteps=`` (the optional contract in docs/plugins.md)."""
    try:
        return "timesteps" in inspect.signature(family.loss).parameters
    except (TypeError, ValueError):
        return False


def _noise_seed(seed: int, batch: int, position: int) -> int:
    return int.from_bytes(hashlib.sha256(f"eval:{seed}:{batch}:{position}".encode()).digest()[:7], "big")


def eval_batches(samples: Sequence[Any], batch_size: int) -> list[list[Any]]:
    """Samples grouped by target size (a batch stacks latents of one shape), at most ``batch_size`` each."""
    by_size: dict[Any, list[Any]] = defaultdict(list)
    for s in samples:
        by_size[s.plan.target_size].append(s)
    return [group[i:i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]


def eval_loss(family: Any, model: Any, batches: Sequence[Sequence[Any]], load: Callable[[list[Any]], tuple[Any, Any]],
              *, timesteps: int, seed: int, device: Any) -> float:
    """Mean loss over every sample and every fixed timestep; ``load(batch)`` gives ``(latents, text)``."""
    import torch

    was_training = model.training
    model.eval()
    devices = [device] if getattr(device, "type", "cpu") == "cuda" else []
    total, weight = 0.0, 0
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for b, batch in enumerate(batches):
                latents, text = load(list(batch))
                size = latents.shape[0]
                for p, position in enumerate(eval_positions(timesteps)):
                    torch.random.default_generator.manual_seed(_noise_seed(seed, b, p))
                    if devices:
                        torch.cuda.manual_seed_all(_noise_seed(seed, b, p))
                    t = torch.full((size,), position, device=latents.device)
                    loss = family.loss(model, latents, text, timesteps=t)
                    total += float(loss) * size
                    weight += size
    finally:
        model.train(was_training)
    return total / max(weight, 1)
