"""Built-in learning-rate schedules (diffusers' implementations, imported when built)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import SchedulerSpec

_DESCRIPTIONS = {
    "constant": "Constant learning rate (ignores lr_warmup_steps).",
    "constant_with_warmup": "Linear warm-up, then constant.",
    "linear": "Linear warm-up, then linear decay to 0.",
    "cosine": "Linear warm-up, then cosine decay to 0.",
    "cosine_with_restarts": "Cosine decay with lr_num_cycles hard restarts.",
    "polynomial": "Polynomial decay with power lr_power.",
}


def _factory(name: str) -> Callable[..., Any]:
    def build(optimizer: Any, cfg: Any, total_steps: int) -> Any:
        from diffusers.optimization import get_scheduler

        return get_scheduler(name, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                             num_training_steps=total_steps, num_cycles=cfg.lr_num_cycles, power=cfg.lr_power)

    return build


@hookimpl
def register_lr_schedulers(register: Callable[[SchedulerSpec], None]) -> None:
    for name, text in _DESCRIPTIONS.items():
        register(SchedulerSpec(name, _factory(name), text))
