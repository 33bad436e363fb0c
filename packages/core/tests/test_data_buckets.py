"""Bucket size math: units, crops, filters and deterministic random crops."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from simpletuner_core.data.buckets import ImagePlan, plan_image, rounded_aspect
from simpletuner_core.data.config import DatasetConfig


def ds(**kw: Any) -> DatasetConfig:
    return DatasetConfig(id="d", instance_data_dir="x", **kw)


def plan(size: tuple[int, int], dataset: DatasetConfig, *, seed: int = 0, key: str = "k",
         multiple: int = 16) -> ImagePlan:
    result = plan_image(size, dataset, size_multiple=multiple, seed=seed, key=key,
                        default_resolution=None, default_resolution_type=None)
    assert isinstance(result, ImagePlan), result
    return result


def check_consistent(p: ImagePlan, multiple: int = 16) -> None:
    left, top, right, bottom = p.crop_box
    assert (right - left, bottom - top) == p.target_size
    assert 0 <= left and 0 <= top and right <= p.resize_to[0] and bottom <= p.resize_to[1]
    assert p.target_size[0] % multiple == 0 and p.target_size[1] % multiple == 0


def test_pixel_resolution_is_the_shorter_edge() -> None:
    p = plan((2000, 1000), ds(resolution=512, resolution_type="pixel"))
    assert p.target_size == (1024, 512)
    assert p.resize_to == p.target_size and p.crop_box == (0, 0, 1024, 512)


def test_area_resolution_is_megapixels_of_1024_squared() -> None:
    p = plan((3000, 3000), ds(resolution=1.0, resolution_type="area"))
    assert p.target_size == (1024, 1024)
    p = plan((2000, 1000), ds(resolution=0.25, resolution_type="area"))
    assert p.target_size == (720, 368)  # 724x362 rounded to multiples of 16: ~0.25 MP
    check_consistent(p)


def test_pixel_area_resolution_is_the_square_root_of_the_area() -> None:
    p = plan((2048, 1024), ds(resolution=1024, resolution_type="pixel_area"))
    assert p.target_size == (1456, 720)  # 1448x724 rounded: area ≈ 1024²
    assert abs(p.target_size[0] * p.target_size[1] - 1024**2) < 0.02 * 1024**2


def test_crop_square_versus_preserve() -> None:
    square = plan((1500, 1000), ds(resolution=512, resolution_type="pixel", crop=True, crop_style="center"))
    assert square.target_size == (512, 512)
    assert square.resize_to == (768, 512)
    assert square.crop_box == (128, 0, 640, 512)
    keep = plan((1500, 1000), ds(resolution=512, resolution_type="pixel", crop=True, crop_aspect="preserve"))
    assert keep.target_size == (768, 512)
    check_consistent(square)
    check_consistent(keep)


def test_corner_crop_starts_top_left() -> None:
    p = plan((1000, 1500), ds(resolution=256, resolution_type="pixel", crop=True, crop_style="corner"))
    assert p.crop_box == (0, 0, 256, 256) and p.resize_to == (256, 384)


def test_minimum_image_size_filters_with_a_reason() -> None:
    reason = plan_image((256, 256), ds(resolution=1.0, resolution_type="area", minimum_image_size=0.25),
                        size_multiple=16, seed=0, key="k")
    assert reason == "smaller than minimum_image_size 0.25 (area): 0.06 MP"
    reason = plan_image((300, 200), ds(resolution=512, resolution_type="pixel", minimum_image_size=256),
                        size_multiple=16, seed=0, key="k")
    assert isinstance(reason, str) and "shorter edge 200 px" in reason


def test_small_images_are_upscaled_with_a_warning() -> None:
    p = plan((256, 256), ds(resolution=512, resolution_type="pixel"))
    assert p.target_size == (512, 512) and p.warnings and "upscaled" in p.warnings[0]
    assert not plan((1024, 1024), ds(resolution=512, resolution_type="pixel")).warnings


def test_maximum_image_size_downsamples_first() -> None:
    dataset = ds(resolution=1024, resolution_type="pixel_area", maximum_image_size=1536, target_downsample_size=1024,
                 crop=True, crop_style="center")
    big = plan((4000, 3000), dataset)
    assert big.downsampled and big.downsample_size == (1182, 887)
    assert big.target_size == (1024, 1024)
    check_consistent(big)
    small = plan((1200, 1200), dataset)
    assert not small.downsampled and small.downsample_size is None


def test_random_crop_is_deterministic_per_seed_and_key() -> None:
    dataset = ds(resolution=256, resolution_type="pixel", crop=True, crop_style="random")
    a = plan((2000, 1000), dataset, seed=1, key="img/a.png")
    assert a == plan((2000, 1000), dataset, seed=1, key="img/a.png")
    boxes = {plan((2000, 1000), dataset, seed=1, key=f"img/{i}.png").crop_box for i in range(8)}
    assert len(boxes) > 1
    seeds = {plan((2000, 1000), dataset, seed=s, key="img/a.png").crop_box for s in range(8)}
    assert len(seeds) > 1
    check_consistent(a)


@pytest.mark.parametrize("rtype,res", [("pixel", 300), ("area", 0.3), ("pixel_area", 333)])
@pytest.mark.parametrize("crop,aspect", [(False, "square"), (True, "square"), (True, "preserve")])
@pytest.mark.parametrize("size", [(640, 480), (333, 1001), (97, 97), (4000, 1234)])
def test_sizes_are_multiples(rtype: str, res: float, crop: bool, aspect: str, size: tuple[int, int]) -> None:
    for multiple in (8, 16, 64):
        p = plan(size, ds(resolution=res, resolution_type=rtype, crop=crop, crop_aspect=aspect), multiple=multiple)
        check_consistent(p, multiple)
        if not crop:
            assert p.resize_to == p.target_size
            # slight stretch only: each side within half a multiple of the exact aspect-preserving size
            exact_w = p.target_size[1] * size[0] / size[1]
            assert abs(exact_w - p.target_size[0]) <= multiple * (1 + p.target_size[0] / p.target_size[1])


def test_defaults_come_from_the_training_config() -> None:
    p = plan_image((640, 480), ds(), size_multiple=16, seed=0, key="k", default_resolution=256,
                   default_resolution_type="pixel")
    assert isinstance(p, ImagePlan) and p.target_size == (336, 256)
    with pytest.raises(ValueError, match="size multiple"):
        plan_image((640, 480), ds(resolution=4, resolution_type="pixel"), size_multiple=16, seed=0, key="k")


def test_aspect_rounding_sets_the_bucket_shape() -> None:
    assert rounded_aspect((208, 200), 1) == 1.0 and rounded_aspect((208, 200), 3) == 1.04
    assert rounded_aspect((1, 300), 2) == 0.01  # never rounds down to a zero-width shape
    assert rounded_aspect((640, 480), None) == 640 / 480
    dataset = ds(resolution=256, resolution_type="pixel_area")
    coarse = plan_image((208, 200), dataset, size_multiple=8, seed=0, key="k", aspect_bucket_rounding=1)
    fine = plan_image((208, 200), dataset, size_multiple=8, seed=0, key="k", aspect_bucket_rounding=3)
    assert isinstance(coarse, ImagePlan) and isinstance(fine, ImagePlan)
    assert coarse.target_size == coarse.resize_to == (256, 256) and fine.target_size == (264, 248)
    square = plan_image((208, 200), ds(resolution=256, resolution_type="pixel_area", crop=True),
                        size_multiple=8, seed=0, key="k", aspect_bucket_rounding=3)
    assert isinstance(square, ImagePlan) and square.target_size == (256, 256)  # square crops ignore the aspect


def test_config_wide_minimum_image_size_is_a_fallback() -> None:
    small = ds(resolution=512, resolution_type="pixel")
    reason = plan_image((300, 200), small, size_multiple=16, seed=0, key="k", default_minimum_image_size=256)
    assert reason == "smaller than minimum_image_size 256 (pixel): shorter edge 200 px"
    own = attrs.evolve(small, minimum_image_size=0)
    assert isinstance(plan_image((300, 200), own, size_multiple=16, seed=0, key="k",
                                 default_minimum_image_size=256), ImagePlan)
