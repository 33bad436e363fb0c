"""Built-in validation: render ``validation_prompt`` with the family's own pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import ValidationMethodSpec


def _pipeline(trainer: Any, model: Any, cfg: Any, step: int) -> list[Any]:
    return trainer.validation_images(model, cfg)


@hookimpl
def register_validation_methods(register: Callable[[ValidationMethodSpec], None]) -> None:
    register(ValidationMethodSpec("pipeline", _pipeline, "The family's diffusers pipeline on the trained weights."))
