"""Validation output: PNGs on disk and ``validation.image`` events carrying the image inline.

Payloads follow SimpleTuner's webhook shape: ``title`` and ``body`` for chat-style receivers, ``images`` as
data URLs, and ``validation_type`` = ``final`` for a finished image or ``intermediary`` for a preview.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import attrs


@attrs.define
class ValidationContext:
    """What a validation method may use besides the model: the job's hooks and the preview callback."""

    job_id: str
    step: int
    hooks: Any = None
    #: ``preview(index, total, timestep, latents)`` for families that report intermediate latents; or None.
    preview: Any = None


def png_data_url(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def short_prompt(prompt: str, limit: int = 40) -> str:
    prompt = " ".join(str(prompt).split())
    return prompt if len(prompt) <= limit else prompt[: limit - 1].rstrip() + "…"


def publish_images(emitter: Any, images: list[Any], output_dir: Path, *, step: int, prompt: str,
                   final: bool, forced: bool = False) -> list[Path]:
    """Save each image under ``output_dir/validation`` and emit one event per image."""
    out_dir = Path(output_dir) / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    trigger = "end" if final else ("forced" if forced else "scheduled")
    written = []
    for index, image in enumerate(images):
        path = out_dir / f"step-{step:06d}-{index}.png"
        image.save(path)
        written.append(path)
        emitter.emit("validation.image", title=f"Validation (step {step}): {short_prompt(prompt)}", body=prompt,
                     step=step, global_step=step, prompt=prompt, path=str(path), validation_type="final",
                     trigger=trigger, resolution=list(image.size),
                     images=[{"src": png_data_url(image), "mime_type": "image/png"}])
    return written
