"""Exponential moving average of the trained parameters, checkpointed through accelerate."""

from __future__ import annotations

from typing import Any


class Ema:
    def __init__(self, params: list[Any], decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in params]

    def update(self, params: list[Any]) -> None:
        import torch

        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach().float() for p in params], 1.0 - self.decay)

    def copy_to(self, params: list[Any]) -> None:
        import torch

        with torch.no_grad():
            for p, s in zip(params, self.shadow, strict=True):
                p.copy_(s.to(p.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = state["decay"]
        self.shadow = [t.clone() for t in state["shadow"]]
