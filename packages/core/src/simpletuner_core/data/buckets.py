"""Size math for aspect buckets: where each image is resized, cropped and which bucket it lands in.

Pure arithmetic on ``(width, height)``: no PIL, no torch, so the preflight can plan a whole dataset before any model
loads, and the same plan drives pixel loading and the content-addressed latent cache later.

Units follow SimpleTuner's ``resolution_type``:

- ``pixel``: ``resolution`` is the length of the shorter edge in px.
- ``area``: ``resolution`` is in megapixels, 1.0 MP = 1024×1024 px.
- ``pixel_area``: ``resolution`` is in px and the target area is ``resolution²``.

``minimum_image_size``, ``maximum_image_size`` and ``target_downsample_size`` use the same unit (for
``pixel_area`` that is the square root of the area in px).

Aspect ratios are rounded to ``aspect_bucket_rounding`` decimals (SimpleTuner's default 2) before the target size
is derived from them, so images of nearly the same shape share one bucket (one tensor shape) instead of splitting
into buckets too small to fill a batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

import attrs

MEGAPIXEL = 1024 * 1024
DEFAULT_RESOLUTION = 1024.0
DEFAULT_RESOLUTION_TYPE = "pixel_area"
DEFAULT_ASPECT_ROUNDING = 2
RESOLUTION_TYPES = ("pixel", "area", "pixel_area")

Size = tuple[int, int]


def _ints(value: Any) -> tuple[int, ...]:
    """Plans are hashed into cache keys: always plain int tuples, whatever sequence was passed."""
    return tuple(int(v) for v in value)


def _maybe_ints(value: Any) -> tuple[int, ...] | None:
    return None if value is None else _ints(value)


@attrs.frozen
class ImagePlan:
    """How one image becomes one training sample; everything the pixel loader and latent cache key need."""

    #: Size after resizing (before cropping).
    resize_to: Size = attrs.field(converter=_ints)
    #: ``(left, top, right, bottom)`` in ``resize_to`` coordinates.
    crop_box: tuple[int, int, int, int] = attrs.field(converter=_ints)
    #: Final size = the bucket; both sides are multiples of the model's size multiple.
    target_size: Size = attrs.field(converter=_ints)
    #: The image exceeded ``maximum_image_size`` and is first brought to ``downsample_size``.
    downsampled: bool = False
    downsample_size: Size | None = attrs.field(default=None, converter=_maybe_ints)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @property
    def bucket(self) -> str:
        return bucket_name(self.target_size)


def bucket_name(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def micro_batches(bucket_counts: Iterable[int], repeats: int, probability: float, global_batch: int,
                  pad_remainders: bool = False) -> int:
    """Global batches one dataset contributes per epoch (= micro-batches per process).

    A batch holds ``global_batch`` samples of one bucket; each bucket's incomplete remainder is dropped, or, with
    ``pad_remainders`` (``disable_bucket_pruning``), becomes one more batch padded with repeats of that bucket's
    own samples. Of the ``full`` batches a dataset can form, an epoch uses ``full × probability`` rounded half up,
    at least 1 (all at 1.0, none at 0). The sampler and the preflight both count with this function, so they
    always agree.
    """
    if global_batch < 1:
        raise ValueError(f"global_batch must be at least 1, got {global_batch}")
    if pad_remainders:
        full = sum(-(-n * (1 + repeats) // global_batch) for n in bucket_counts)
    else:
        full = sum(n * (1 + repeats) // global_batch for n in bucket_counts)
    if full == 0 or probability <= 0:
        return 0
    return full if probability >= 1 else max(1, math.floor(full * probability + 0.5))


def resolve_resolution(
    dataset: Any, default_resolution: float | None = None, default_resolution_type: str | None = None
) -> tuple[float, str]:
    """The dataset's resolution and unit, falling back to the training config's, then to 1024 ``pixel_area``."""
    rtype = dataset.resolution_type or default_resolution_type or DEFAULT_RESOLUTION_TYPE
    res = dataset.resolution if dataset.resolution is not None else default_resolution
    if res is None:
        res = 1.0 if rtype == "area" else DEFAULT_RESOLUTION
    return float(res), rtype


def size_unit_problem(value: float, resolution_type: str) -> str | None:
    """A size that reads as a unit mix-up (1024 megapixels, 0.5 px), or None."""
    if resolution_type == "area" and value > 16:
        return f"{value:g} with resolution_type 'area' means {value:g} megapixels"
    if resolution_type in ("pixel", "pixel_area") and value < 16:
        return f"{value:g} with resolution_type {resolution_type!r} means {value:g} px"
    return None


def target_edge(resolution: float, resolution_type: str) -> float:
    """Edge in px of the square whose size equals ``resolution`` in its unit."""
    return math.sqrt(resolution * MEGAPIXEL) if resolution_type == "area" else resolution


def resolution_problem(resolution: float, resolution_type: str, size_multiple: int) -> str | None:
    """Why a resolution cannot produce a bucket at all (a config error, not a per-image filter), or None."""
    if resolution_type not in RESOLUTION_TYPES:
        return f"unknown resolution_type {resolution_type!r} (known: {', '.join(RESOLUTION_TYPES)})"
    if resolution <= 0:
        return f"resolution must be positive, got {resolution:g}"
    edge = target_edge(resolution, resolution_type)
    if edge < size_multiple:
        return (f"resolution {resolution:g} ({resolution_type}) is a {edge:.1f} px edge, smaller than the "
                f"model's size multiple {size_multiple}")
    return None


def measure(size: Size, resolution_type: str) -> float:
    """An image's size in the unit of ``resolution_type``."""
    w, h = size
    if resolution_type == "pixel":
        return float(min(w, h))
    if resolution_type == "area":
        return w * h / MEGAPIXEL
    return math.sqrt(w * h)


def describe(value: float, resolution_type: str) -> str:
    if resolution_type == "area":
        return f"{value:.2f} MP"
    if resolution_type == "pixel":
        return f"shorter edge {value:.0f} px"
    return f"{value:.0f} px (square root of the area)"


def scale_to(size: tuple[float, float], value: float, resolution_type: str) -> float:
    """Factor that makes ``measure(size * factor) == value``."""
    w, h = size
    if resolution_type == "pixel":
        return value / min(w, h)
    if resolution_type == "area":
        return math.sqrt(value * MEGAPIXEL / (w * h))
    return value / math.sqrt(w * h)


def rounded_aspect(size: Size, decimals: int | None) -> float:
    """Width / height rounded to ``decimals`` places (``None``: exact), the shape an image's bucket is built on."""
    ratio = size[0] / size[1]
    return ratio if decimals is None else max(10.0 ** -decimals, round(ratio, decimals))


def round_to(x: float, multiple: int) -> int:
    """Nearest multiple of ``multiple``, never below one multiple."""
    return max(multiple, math.floor(x / multiple + 0.5) * multiple)


def crop_offset(overflow: Size, style: str, seed: int, key: str) -> tuple[int, int]:
    """Left/top of the crop; ``random`` hashes ``seed:key`` so an image always gets the same crop for a seed."""
    dx, dy = overflow
    if style == "center":
        return dx // 2, dy // 2
    if style == "corner":
        return 0, 0
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (dx + 1), int.from_bytes(digest[8:16], "big") % (dy + 1)


def plan_image(
    original_size: Size,
    dataset: Any,
    *,
    size_multiple: int,
    seed: int,
    key: str,
    default_resolution: float | None = None,
    default_resolution_type: str | None = None,
    default_minimum_image_size: float | None = None,
    aspect_bucket_rounding: int | None = DEFAULT_ASPECT_ROUNDING,
) -> ImagePlan | str:
    """Plan one image, or return the human reason it is filtered out.

    ``default_minimum_image_size`` is the training config's ``minimum_image_size``, used when the dataset sets
    none (in the dataset's unit; a dataset's own 0 turns the minimum off).
    """
    w, h = int(original_size[0]), int(original_size[1])
    if w <= 0 or h <= 0:
        return f"image has no pixels ({w}x{h})"
    res, rtype = resolve_resolution(dataset, default_resolution, default_resolution_type)
    problem = resolution_problem(res, rtype, size_multiple)
    if problem:
        raise ValueError(problem)
    size = measure((w, h), rtype)
    lowest = dataset.minimum_image_size
    if lowest is None:
        lowest = default_minimum_image_size
    if lowest and size < lowest:
        return f"smaller than minimum_image_size {lowest:g} ({rtype}): {describe(size, rtype)}"

    ew, eh = w, h
    downsample_size: Size | None = None
    highest = dataset.maximum_image_size
    if highest is not None and size > highest:
        goal = dataset.target_downsample_size or highest
        factor = scale_to((w, h), goal, rtype)
        if factor < 1.0:
            downsample_size = (max(1, round(w * factor)), max(1, round(h * factor)))
            ew, eh = downsample_size

    if dataset.crop and dataset.crop_aspect == "square":
        edge = round_to(target_edge(res, rtype), size_multiple)
        target = (edge, edge)
    else:  # the bucket's shape is the rounded aspect ratio, scaled to the resolution
        aspect = rounded_aspect((ew, eh), aspect_bucket_rounding)
        factor = scale_to((aspect, 1.0), res, rtype)
        target = (round_to(aspect * factor, size_multiple), round_to(factor, size_multiple))
    tw, th = target
    cover = max(tw / ew, th / eh)
    if dataset.crop:
        resize_to = (max(tw, round(ew * cover)), max(th, round(eh * cover)))
        left, top = crop_offset((resize_to[0] - tw, resize_to[1] - th), dataset.crop_style, seed, key)
    else:  # stretch to the rounded target: at most half a size multiple per side
        resize_to, left, top = target, 0, 0
    warnings: tuple[str, ...] = ()
    if cover > 1.0 + 1e-9:
        warnings = (f"upscaled ×{cover:.2f} from {ew}x{eh} to fill {tw}x{th}",)
    return ImagePlan(
        resize_to=resize_to,
        crop_box=(left, top, left + tw, top + th),
        target_size=target,
        downsampled=downsample_size is not None,
        downsample_size=downsample_size,
        warnings=warnings,
    )
