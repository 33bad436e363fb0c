"""Validation output: PNGs on disk and ``validation.image`` events carrying the image inline."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any


def png_data_url(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def publish_images(emitter: Any, images: list[Any], output_dir: Path, *, step: int, prompt: str,
                   final: bool) -> list[Path]:
    """Save each image under ``output_dir/validation`` and emit one event per image."""
    out_dir = Path(output_dir) / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, image in enumerate(images):
        path = out_dir / f"step-{step:06d}-{index}.png"
        image.save(path)
        written.append(path)
        emitter.emit("validation.image", step=step, prompt=prompt, path=str(path),
                     validation_type="final" if final else "scheduled", resolution=list(image.size),
                     images=[{"src": png_data_url(image), "mime_type": "image/png"}])
    return written
