"""Edit/reference pairing in the preflight: by file name, unpaired/extra/mismatched reported, crashes refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from simpletuner_core.data.config import DatasetConfig
from simpletuner_core.data.images import load_image
from simpletuner_core.data.preflight import Plan, build_plan
from simpletuner_core.demo_data import write_demo_pairs
from simpletuner_core.plugins.registry import Registry


def datasets(ctype: str = "reference_strict", **edit: Any) -> list[DatasetConfig]:
    return [
        DatasetConfig(**{"id": "edit", "instance_data_dir": "edit", "conditioning_data": ["ref"], "resolution": 64,
                         "resolution_type": "pixel_area", "crop": True, "crop_style": "random", **edit}),
        DatasetConfig(id="ref", dataset_type="conditioning", instance_data_dir="ref", conditioning_type=ctype,
                      resolution=64, resolution_type="pixel_area"),
        DatasetConfig(id="text", dataset_type="text_embeds", default=True),
    ]


def plan(tmp_path: Path, registry: Registry, sets: list[DatasetConfig], batch: int = 1) -> Plan:
    return build_plan(sets, base_dir=tmp_path, registry=registry, train_batch_size=batch, seed=3)


def test_pairs_by_file_name_and_reports_unpaired_extra_and_mismatched(tmp_path: Path,
                                                                      data_registry: Registry) -> None:
    write_demo_pairs(tmp_path / "edit", tmp_path / "ref", count=6)
    (tmp_path / "ref" / "pair_000.png").unlink()  # a target without its reference
    Image.new("RGB", (64, 64)).save(tmp_path / "ref" / "stray.png")  # a reference without a target
    Image.new("RGB", (96, 48)).save(tmp_path / "ref" / "pair_001.png")  # wrong aspect for reference_strict
    Image.new("RGB", (64, 64)).save(tmp_path / "ref" / "pair_002.jpg")  # another extension pairs too
    (tmp_path / "ref" / "pair_002.png").unlink()

    result = plan(tmp_path, data_registry, datasets())
    assert result.ok
    [pairing] = result.pairings
    assert (pairing.paired, pairing.unpaired, pairing.extra) == (4, ["pair_000"], ["stray"])
    assert pairing.mismatched == ["pair_001 (target 64x64, reference 96x48)"]
    assert sorted(Path(s.path).name for s in result.samples) == ["pair_002.png", "pair_003.png", "pair_004.png",
                                                                 "pair_005.png"]
    assert {Path(r.sample.path).name for r in result.references} >= {"pair_002.jpg"}
    reasons = {Path(f.path).name: f.reason for f in result.filtered}
    assert reasons["pair_000.png"].startswith("no reference image: pair_000.* missing")
    assert "reference aspect differs" in reasons["pair_001.png"]
    text = result.render()
    assert "edit ← ref (reference_strict): 4 paired, 1 unpaired, 1 extra, 1 mismatched" in text
    assert "unpaired: pair_000" in text and "extra: stray" in text
    json.dumps(result.to_dict())  # the plan event must stay JSON


def test_strict_references_get_the_targets_crop(tmp_path: Path, data_registry: Registry) -> None:
    for name, colour in (("edit", "red"), ("ref", "blue")):
        (tmp_path / name).mkdir()
        Image.new("RGB", (128, 96), colour).save(tmp_path / name / "a.png")
    (tmp_path / "edit" / "a.txt").write_text("make it red")
    Image.new("RGB", (256, 192), "blue").save(tmp_path / "ref" / "a.png")  # same aspect, twice the size
    result = plan(tmp_path, data_registry, datasets(crop_aspect="square"))
    [target], [ref] = result.samples, result.references
    assert ref.sample.plan.crop_box == target.plan.crop_box and ref.sample.plan.target_size == (64, 64)
    pixels = load_image(ref.sample, (tmp_path / "ref" / "a.png").read_bytes())
    assert pixels.size == (64, 64)


def test_loose_references_keep_their_own_aspect_and_mixed_sizes_cannot_batch(tmp_path: Path,
                                                                              data_registry: Registry) -> None:
    write_demo_pairs(tmp_path / "edit", tmp_path / "ref", count=4)
    Image.new("RGB", (128, 64)).save(tmp_path / "ref" / "pair_001.png")
    single = plan(tmp_path, data_registry, datasets("reference_loose"))
    sizes = {Path(r.sample.path).name: r.sample.plan.target_size for r in single.references}
    assert single.ok and sizes["pair_001.png"] == (96, 48) and sizes["pair_000.png"] == (64, 64)
    batched = plan(tmp_path, data_registry, datasets("reference_loose"), batch=2)
    assert not batched.ok
    [error] = batched.errors
    assert error.path == "train_batch_size" and "references of different sizes in 'ref' (64x64, 96x48)" in \
        error.message


@pytest.mark.parametrize("ctype", ["reference_strict", "reference_loose"])
def test_nothing_paired_means_nothing_to_train(tmp_path: Path, data_registry: Registry, ctype: str) -> None:
    write_demo_pairs(tmp_path / "edit", tmp_path / "other", count=2)
    (tmp_path / "ref").mkdir()
    result = plan(tmp_path, data_registry, datasets(ctype))
    assert not result.ok and "no usable images" in result.errors[0].message


def test_a_home_relative_instance_data_dir_pairs(tmp_path: Path, data_registry: Registry,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``~`` is expanded before the dataloader's directory is joined, for listing and pairing alike."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    write_demo_pairs(home / "edit", home / "ref", count=3)
    import attrs

    sets = datasets()
    sets[0] = attrs.evolve(sets[0], instance_data_dir="~/edit")
    sets[1] = attrs.evolve(sets[1], instance_data_dir="~/ref")
    result = plan(tmp_path / "config", data_registry, sets)
    [pairing] = result.pairings
    assert result.ok and (pairing.paired, pairing.unpaired, pairing.extra) == (3, [], [])
    assert {Path(r.sample.path).parent for r in result.references} == {home / "ref"}


def test_strict_references_get_the_targets_downsample_step_too(tmp_path: Path, data_registry: Registry) -> None:
    """The same image as target and strict reference must give the same pixels, also when the target is first
    downsampled (maximum_image_size): the reference plan is the target's plan."""
    import attrs
    import numpy as np

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    for name in ("edit", "ref"):
        (tmp_path / name).mkdir()
        noise.save(tmp_path / name / "a.png")
    (tmp_path / "edit" / "a.txt").write_text("same")
    result = plan(tmp_path, data_registry, datasets(maximum_image_size=96, target_downsample_size=80))
    [target], [ref] = result.samples, result.references
    assert target.plan.downsampled and target.plan.downsample_size is not None
    assert ref.sample.plan == attrs.evolve(target.plan, warnings=())
    data = (tmp_path / "ref" / "a.png").read_bytes()
    assert np.array_equal(np.asarray(load_image(ref.sample, data)), np.asarray(load_image(target, data)))


def test_two_references_with_one_name_are_reported_not_picked(tmp_path: Path, data_registry: Registry) -> None:
    write_demo_pairs(tmp_path / "edit", tmp_path / "ref", count=3)
    Image.new("RGB", (64, 64)).save(tmp_path / "ref" / "pair_001.jpg")  # pair_001.png is there too
    result = plan(tmp_path, data_registry, datasets())
    [pairing] = result.pairings
    assert result.ok and pairing.paired == 2
    assert pairing.mismatched == ["pair_001 (several references: pair_001.jpg, pair_001.png)"]
    reasons = {Path(f.path).name: f.reason for f in result.filtered}
    assert "several reference images named pair_001.*" in reasons["pair_001.png"]
    assert "pair_001.png" not in {Path(s.path).name for s in result.samples}
