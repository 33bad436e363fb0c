"""Pixel loading: every PIL mode ends as RGB in [-1, 1] with its brightness kept (no clipping, alpha on white)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from simpletuner_core.data.buckets import ImagePlan
from simpletuner_core.data.images import load_pixels
from simpletuner_core.data.preflight import Sample


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    plan = ImagePlan(resize_to=(64, 64), crop_box=(0, 0, 64, 64), target_size=(64, 64))
    return load_pixels(Sample("d", "x.png", "c", (64, 64), plan, 0), data).numpy()


@pytest.mark.parametrize(("array", "fmt"), [
    (np.full((64, 64), 32768, np.uint16), "PNG"),  # I;16
    (np.full((64, 64), 32768, np.int32), "TIFF"),  # I holding 16-bit values
    (np.full((64, 64), 0.5, np.float32), "TIFF"),  # F in [0, 1]
    (np.full((64, 64), 128.0, np.float32), "TIFF"),  # F in 0..255
])
def test_high_bit_depth_mid_grey_stays_mid_grey(array: np.ndarray, fmt: str) -> None:
    out = pixels(encode(Image.fromarray(array), fmt))
    assert out.shape == (3, 64, 64)
    assert np.abs(out).max() < 0.01  # mid-grey is ≈ 0 in [-1, 1], not +1 (clipped to white)


def test_full_range_16_bit_keeps_black_and_white() -> None:
    array = np.zeros((64, 64), np.uint16)
    array[:, 32:] = 65535
    out = pixels(encode(Image.fromarray(array)))
    assert out[:, :, :16].max() == -1.0 and out[:, :, 48:].min() == 1.0


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_transparent_areas_become_white(mode: str) -> None:
    img = Image.new("RGBA", (64, 64), (255, 0, 0, 0)).convert(mode)
    assert np.allclose(pixels(encode(img)), 1.0)


def test_palette_transparency_and_cmyk() -> None:
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.info["transparency"] = 0
    assert np.allclose(pixels(encode(palette)), 1.0)
    cyan = pixels(encode(Image.new("CMYK", (64, 64), (255, 0, 0, 0)), "JPEG"))
    assert cyan[0].max() < -0.9 and cyan[1:].min() > 0.9
