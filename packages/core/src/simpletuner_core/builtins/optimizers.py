"""Built-in optimizers. Libraries are imported when an optimizer is built, not when it is listed."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import OptimizerSpec


def _needs(module: str, package: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"needs the `{package}` package (pip install {package})"
        return None

    return check


#: Optimizers whose betas do not come from adam_beta1/2 when optimizer_beta1/2 are unset: their own defaults.
OWN_BETAS: dict[str, tuple[float, float]] = {"optimi-lion": (0.9, 0.99)}


def betas(cfg: Any, name: str = "") -> tuple[float, float]:
    """``optimizer_beta1/2`` when set, else the optimizer's own defaults (Lion), else ``adam_beta1/2``."""
    fallback = OWN_BETAS.get(name, (cfg.adam_beta1, cfg.adam_beta2))
    beta1, beta2 = getattr(cfg, "optimizer_beta1", None), getattr(cfg, "optimizer_beta2", None)
    return (fallback[0] if beta1 is None else beta1, fallback[1] if beta2 is None else beta2)


def _adamw(params: Iterable[Any], cfg: Any) -> Any:
    import torch

    return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=betas(cfg),
                             weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)


def _optimi_adamw(params: Iterable[Any], cfg: Any, kahan: bool = False) -> Any:
    import optimi

    return optimi.AdamW(params, lr=cfg.learning_rate, betas=betas(cfg),
                        weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon,
                        kahan_sum=True if kahan else None)


def _optimi_lion(params: Iterable[Any], cfg: Any) -> Any:
    import optimi

    return optimi.Lion(params, lr=cfg.learning_rate, betas=betas(cfg, "optimi-lion"),
                       weight_decay=cfg.adam_weight_decay)


def _adamw8bit(params: Iterable[Any], cfg: Any) -> Any:
    import bitsandbytes

    return bitsandbytes.optim.AdamW8bit(params, lr=cfg.learning_rate, betas=betas(cfg),
                                        weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)


def _prodigy(params: Iterable[Any], cfg: Any) -> Any:
    from prodigyopt import Prodigy

    return Prodigy(params, lr=cfg.learning_rate, betas=betas(cfg),
                   weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)


@hookimpl
def register_optimizers(register: Callable[[OptimizerSpec], None]) -> None:
    register(OptimizerSpec("adamw", _adamw, "torch AdamW (decoupled weight decay)."))
    register(OptimizerSpec(
        "adamw_bf16", lambda p, c: _optimi_adamw(p, c, kahan=True),
        "AdamW with Kahan-compensated updates, for weights kept in bf16 (torch-optimi).",
        _needs("optimi", "torch-optimi"),
    ))
    register(OptimizerSpec("optimi-adamw", _optimi_adamw, "torch-optimi AdamW.", _needs("optimi", "torch-optimi")))
    register(OptimizerSpec("optimi-lion", _optimi_lion, "torch-optimi Lion (use a ~3-10x lower learning rate).",
                           _needs("optimi", "torch-optimi")))
    register(OptimizerSpec("adamw8bit", _adamw8bit, "bitsandbytes 8-bit AdamW (CUDA).",
                           _needs("bitsandbytes", "bitsandbytes")))
    register(OptimizerSpec("prodigy", _prodigy, "Prodigy (learning-rate free; use learning_rate=1.0).",
                           _needs("prodigyopt", "prodigyopt")))
