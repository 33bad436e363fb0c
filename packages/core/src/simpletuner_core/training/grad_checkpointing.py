"""Gradient checkpointing on every Nth transformer block only (``gradient_checkpointing_interval``).

diffusers models run each block through ``self._gradient_checkpointing_func(block, *args)`` when
``gradient_checkpointing`` is on. We hand ``enable_gradient_checkpointing`` a function that checkpoints a block
only when its index is a multiple of N and calls the others directly: fewer recomputations (faster), more memory.
Indices are given in the order blocks are first called, which is the model's own block order, so the choice is
the same in every forward and needs no knowledge of the family's layout.
"""

from __future__ import annotations

from typing import Any


class IntervalCheckpointing:
    """The ``gradient_checkpointing_func`` for diffusers models: checkpoint blocks 0, N, 2N, …"""

    def __init__(self, interval: int) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = interval
        self._index: dict[int, int] = {}

    def __call__(self, block: Any, *args: Any) -> Any:
        import torch.utils.checkpoint

        index = self._index.setdefault(id(block), len(self._index))
        if index % self.interval:
            return block(*args)
        return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False)


def enable(model: Any, interval: int | None) -> bool:
    """Turn on gradient checkpointing (every block, or every ``interval``-th); False when the model can't."""
    if not hasattr(model, "enable_gradient_checkpointing"):
        return False
    if interval and interval > 1:
        model.enable_gradient_checkpointing(gradient_checkpointing_func=IntervalCheckpointing(interval))
    else:
        model.enable_gradient_checkpointing()
    return True
