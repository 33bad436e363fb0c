"""Pixels for one planned sample: decode, orient, resize, crop, normalise to [-1, 1].

Follows the :class:`~simpletuner_core.data.buckets.ImagePlan` exactly, so the tensor always has the bucket's size
and the latent cache key (which hashes the plan) describes what was encoded.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from simpletuner_core.data.preflight import Sample


def _eight_bit(img: Any) -> Any:
    """High-bit-depth greyscale as 8-bit ``L``: PIL's ``convert`` clips these values at 255 (mid-grey → white).

    ``I;16*`` keeps the top 8 bits. ``I`` holding 0..65535 is how PIL decodes some 16-bit files, so it is scaled
    like ``I;16``; wider ``I`` values are scaled from the non-negative int32 range. ``F`` is read as [0, 1] when its
    maximum is at most 1, else as 0..255 (clipped).
    """
    import numpy as np
    from PIL import Image

    if img.mode.startswith("I;16"):
        out = np.asarray(img).astype(np.uint16) >> 8
    elif img.mode == "I":
        values = np.clip(np.asarray(img, dtype=np.int64), 0, None)
        out = values >> (8 if values.max(initial=0) <= 0xFFFF else 23)
    elif img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        out = np.clip(np.rint(values * scale), 0, 255)
    else:
        return img
    return Image.fromarray(out.astype(np.uint8))


def _rgb(img: Any) -> Any:
    """RGB (CMYK, palette, greyscale of any depth), transparent areas composited onto white (dropping alpha would
    expose arbitrary colours)."""
    from PIL import Image

    img = _eight_bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(sample: Sample, data: bytes) -> Any:
    """The planned PIL image (RGB, ``plan.target_size``)."""
    from PIL import Image, ImageOps

    plan = sample.plan
    with Image.open(io.BytesIO(data)) as opened:
        img = _rgb(ImageOps.exif_transpose(opened))
    if plan.downsampled and plan.downsample_size is not None:
        img = img.resize(plan.downsample_size, Image.Resampling.LANCZOS)
    if img.size != plan.resize_to:
        img = img.resize(plan.resize_to, Image.Resampling.LANCZOS)
    if plan.crop_box != (0, 0, *plan.resize_to):
        img = img.crop(plan.crop_box)
    if img.size != plan.target_size:
        raise ValueError(f"{sample.path}: planned {plan.target_size}, got {img.size}; the file changed since "
                         "the preflight, re-run it")
    return img


def load_pixels(sample: Sample, data: bytes) -> torch.Tensor:
    """``(3, H, W)`` float32 in [-1, 1], H×W = the sample's bucket."""
    import numpy as np
    import torch

    array = np.asarray(load_image(sample, data), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32)
    return tensor.div_(127.5).sub_(1.0)
