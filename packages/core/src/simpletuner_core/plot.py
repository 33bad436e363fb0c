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


def _polyline(values: Sequence[float], box: tuple[int, int, int, int], log: bool = False) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    ys = [math.log10(v) if log else v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not ys:
        return []
    low, high = min(ys), max(ys)
    span = (high - low) or 1.0
    step = (x1 - x0) / max(1, len(ys) - 1)
    return [(x0 + i * step, y1 - (y - low) / span * (y1 - y0)) for i, y in enumerate(ys)]


def write_plot(path: str | Path, losses: Sequence[float], lrs: Sequence[float]) -> Path:
    """Loss (blue, left scale) and learning rate (orange, own scale) per optimizer step; atomic write."""
    from PIL import Image, ImageDraw

    path = Path(path)
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _MARGIN
    box = (left, top, SIZE[0] - right, SIZE[1] - bottom)
    draw.rectangle(box, outline=(160, 160, 160))
    finite = [v for v in losses if math.isfinite(v)]
    if finite:
        draw.text((4, top), f"{max(finite):.3g}", fill=(31, 119, 180))
        draw.text((4, box[3] - 10), f"{min(finite):.3g}", fill=(31, 119, 180))
    for values, colour in ((lrs, (255, 127, 14)), (losses, (31, 119, 180))):
        points = _polyline(values, box)
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
    draw.text((left, SIZE[1] - bottom + 8), f"loss (blue), lr (orange); steps 1..{len(losses)}", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
