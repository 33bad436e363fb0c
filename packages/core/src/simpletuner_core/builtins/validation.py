"""Built-in validation methods: ``pipeline`` (the family's own pipeline) and ``external-script``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import ValidationMethodSpec


def _pipeline(trainer: Any, model: Any, cfg: Any, step: int, context: Any = None) -> list[Any]:
    """Every prompt of :func:`validation_prompts`, each through the family's ``validation_images``; previews
    follow validation_prompt only (their events are titled with it)."""
    import attrs

    from simpletuner_core.training.validation import MAIN, RenderedImage, validation_prompts

    preview = getattr(context, "preview", None)
    out: list[Any] = []
    for item in validation_prompts(cfg):
        one = attrs.evolve(cfg, validation_prompt=item.prompt)
        if preview is not None and item.name == MAIN:
            images = trainer.validation_images(model, one, on_latents=preview)
        else:
            images = trainer.validation_images(model, one)
        out += [RenderedImage(image, item.prompt, item.name) for image in images]
    return out


def _external(trainer: Any, model: Any, cfg: Any, step: int, context: Any = None) -> list[Any]:
    """Hand validation to ``validation_external_script``; it renders and reports on its own (no images here).

    ``{local_checkpoint_path}`` is the newest checkpoint written so far (empty before the first one);
    ``{remote_checkpoint_path}`` is always empty for validation.
    """
    if context is None or context.hooks is None:
        return []
    values = context.hooks.values(step, context.hooks.last_checkpoint)
    context.hooks.scripts.run("validation", cfg.validation_external_script, values,
                              background=cfg.validation_external_background)
    return []


@hookimpl
def register_validation_methods(register: Callable[[ValidationMethodSpec], None]) -> None:
    register(ValidationMethodSpec("pipeline", _pipeline, "The family's diffusers pipeline on the trained weights."))
    register(ValidationMethodSpec("external-script", _external,
                                  "Run validation_external_script with the training context as placeholders."))
