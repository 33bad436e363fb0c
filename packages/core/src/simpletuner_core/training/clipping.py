"""Gradient clipping by element value (SimpleTuner's default) or by total norm, through accelerate."""

from __future__ import annotations

from typing import Any

CLIP_METHODS = ("value", "norm")


def clip_gradients(accelerator: Any, params: list[Any], method: str, threshold: float) -> None:
    """Clip the gradients of ``params`` in place; ``threshold`` 0 (or less) disables clipping.

    ``value`` clamps every element to ±threshold; ``norm`` rescales all gradients together so their total L2
    norm is at most threshold. Accelerate's wrappers unscale fp16 gradients first and act on every process.
    """
    if threshold <= 0:
        return
    if method == "value":
        accelerator.clip_grad_value_(params, threshold)
    elif method == "norm":
        accelerator.clip_grad_norm_(params, threshold)
    else:
        raise ValueError(f"unknown grad_clip_method {method!r} (known: {', '.join(CLIP_METHODS)})")
