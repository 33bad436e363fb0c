"""The per-job loss / learning-rate plot: a small PNG written next to the checkpoints.

Drawn with Pillow (already a training dependency), so no plotting library is needed. The server serves it via
:func:`job_plot_path`; this module imports nothing heavy at module level.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOT_NAME = "training-plot.png"
SIZE = (640, 360)
_MARGIN = (56, 16, 16, 40)  # left, top, right, bottom
EVAL_COLOUR = (44, 160, 44)


def plot_path(output_dir: str | Path) -> Path:
    """Where a run writing to ``output_dir`` keeps its plot."""
    return Path(output_dir).expanduser() / PLOT_NAME


def job_plot_path(store: Any, job_id: str) -> Path | None:
    """The plot of job ``job_id`` if it has been written (raises the store's JobError for unknown ids)."""
    job = store.get_job(job_id)
    output_dir = job.output_dir or (job.config or {}).get("--output_dir") or (job.config or {}).get("output_dir")
    if not output_dir:
        return None
    path = plot_path(output_dir)
    return path if path.is_file() else None


def _polyline(values: Sequence[float], box: tuple[int, int, int, int], log: bool = False,
              bounds: tuple[float, float] | None = None) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    ys = [math.log10(v) if log else v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not ys:
        return []
    low, high = bounds or (min(ys), max(ys))
    span = (high - low) or 1.0
    step = (x1 - x0) / max(1, len(ys) - 1)
    return [(x0 + i * step, y1 - (y - low) / span * (y1 - y0)) for i, y in enumerate(ys)]


def _dot(draw: Any, point: tuple[float, float], colour: tuple[int, int, int], radius: int = 2) -> None:
    x, y = point
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)


def write_plot(path: str | Path, losses: Sequence[float], lrs: Sequence[float],
               eval_losses: Sequence[tuple[int, float]] = ()) -> Path:
    """Loss (blue, left scale) and learning rate (orange, own scale) per optimizer step, plus the eval loss
    (green dots at the steps it was computed, on the loss's scale so the two compare by eye); atomic write."""
    from PIL import Image, ImageDraw

    path = Path(path)
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _MARGIN
    box = (left, top, SIZE[0] - right, SIZE[1] - bottom)
    draw.rectangle(box, outline=(160, 160, 160))
    evals = [(int(step), float(v)) for step, v in eval_losses if math.isfinite(v)]
    finite = [v for v in losses if math.isfinite(v)] + [v for _, v in evals]
    bounds = (min(finite), max(finite)) if finite else None
    if finite:
        draw.text((4, top), f"{max(finite):.3g}", fill=(31, 119, 180))
        draw.text((4, box[3] - 10), f"{min(finite):.3g}", fill=(31, 119, 180))
    for values, colour, scale in ((lrs, (255, 127, 14), None), (losses, (31, 119, 180), bounds)):
        points = _polyline(values, box, bounds=scale)
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            _dot(draw, points[0], colour)
    if evals and bounds:
        low, high = bounds
        span, last = (high - low) or 1.0, max(len(losses), max(s for s, _ in evals), 2)
        for step, value in evals:
            x = box[0] + (step - 1) / (last - 1) * (box[2] - box[0])
            _dot(draw, (x, box[3] - (value - low) / span * (box[3] - box[1])), EVAL_COLOUR, radius=3)
    legend = "loss (blue), lr (orange)" + (", eval loss (green)" if evals else "")
    draw.text((left, SIZE[1] - bottom + 8), f"{legend}; steps 1..{len(losses)}", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
