"""Preflight on real files: discovery, captions, filters, buckets, impossible plans, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from PIL import Image

from simpletuner_core.data.config import DatasetConfig
from simpletuner_core.data.preflight import Plan, build_plan, read_image_size
from simpletuner_core.data.sampler import BucketBatchSampler
from simpletuner_core.demo_data import write_demo_dataset
from simpletuner_core.plugins.registry import Registry


@pytest.fixture
def registry(data_registry: Registry) -> Registry:
    return data_registry


def image(path: Path, size: tuple[int, int], caption: str | None = "a thing", colour: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)
    return path


def ds(**kw: Any) -> DatasetConfig:
    base: dict[str, Any] = {"id": "demo", "instance_data_dir": "images", "resolution": 64,
                            "resolution_type": "pixel", "crop": True}
    return DatasetConfig(**{**base, **kw})


def plan_for(tmp_path: Path, registry: Registry, datasets: list[DatasetConfig], **kw: Any) -> Plan:
    kw.setdefault("train_batch_size", 1)
    return build_plan(datasets, base_dir=tmp_path, registry=registry, **kw)


def test_found_and_filtered_with_reasons(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=4)
    image(tmp_path / "images" / "tiny.png", (16, 16))
    image(tmp_path / "images" / "sub" / "uncaptioned.png", (64, 64), caption=None)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not really a jpeg")
    (tmp_path / "images" / "broken.txt").write_text("a broken file")
    (tmp_path / "images" / "notes.md").write_text("ignored: not an image")

    plan = plan_for(tmp_path, registry, [ds(minimum_image_size=32)])
    reasons = {Path(f.path).name: f.reason for f in plan.filtered}
    assert set(reasons) == {"tiny.png", "uncaptioned.png", "broken.jpg"}
    assert reasons["tiny.png"].startswith("smaller than minimum_image_size 32 (pixel)")
    assert reasons["uncaptioned.png"].startswith("no caption")
    assert reasons["broken.jpg"].startswith("unreadable image:")
    [summary] = plan.datasets
    assert (summary.found, summary.usable, summary.filtered) == (7, 4, 3)
    assert plan.ok and plan.buckets == {"64x64": 4}
    sample = plan.samples[0]
    assert sample.caption == "a red square on a blue background"
    assert Path(sample.path).is_absolute() and sample.original_size == (64, 64)
    json.dumps(plan.to_dict())


def test_bucket_counts_include_repeats(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=3)
    image(tmp_path / "wide" / "w1.png", (128, 64))
    image(tmp_path / "wide" / "w2.png", (128, 64))
    datasets = [ds(repeats=2), ds(id="wide", instance_data_dir="wide", crop_aspect="preserve", repeats=1)]
    plan = plan_for(tmp_path, registry, datasets, train_batch_size=2)
    assert plan.buckets == {"64x64": 9, "128x64": 4}
    assert len(plan.samples) == 5  # repeats are the sampler's job
    text = plan.render()
    assert "64x64: 9" in text and "128x64: 4" in text


def test_impossible_plan_names_the_knob(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=3)
    plan = plan_for(tmp_path, registry, [ds()], train_batch_size=4)
    assert not plan.ok
    [err] = plan.errors
    assert err.path == "train_batch_size"
    assert "bucket 64x64 of dataset 'demo' holds 3 images" in err.message
    assert "train_batch_size (4) × processes (1) = 4" in err.message
    assert "--train_batch_size" in err.message and "repeats" in err.message
    assert len(plan.filtered) == 3 and "fewer than train_batch_size (4)" in plan.filtered[0].reason
    assert "train_batch_size" in plan.render()
    # the knobs named really fix it
    assert plan_for(tmp_path, registry, [ds(repeats=1)], train_batch_size=4).ok
    assert plan_for(tmp_path, registry, [ds()], train_batch_size=3).ok


def test_accumulation_counts_micro_batches_not_samples(tmp_path: Path, registry: Registry) -> None:
    # two buckets of 7: 14 samples ≥ 4 × 3, but only 1 + 1 whole micro-batches of 4 < 3 for one optimizer step
    write_demo_dataset(tmp_path / "images", count=7)
    for i in range(7):
        image(tmp_path / "images" / f"wide{i}.png", (128, 64))
    dataset = ds(crop_aspect="preserve")
    plan = plan_for(tmp_path, registry, [dataset], train_batch_size=4, gradient_accumulation_steps=3)
    assert plan.buckets == {"64x64": 7, "128x64": 7} and plan.micro_batches_per_epoch == 2
    [err] = plan.errors
    assert err.path == "gradient_accumulation_steps"
    assert "2 micro-batches per process, fewer than gradient_accumulation_steps (3)" in err.message
    assert "train_batch_size (4) × processes (1) = 4" in err.message
    assert all(k in err.message for k in ("--gradient_accumulation_steps", "--train_batch_size", "repeats"))
    assert plan.to_dict()["micro_batches_per_epoch"] == 2 and "Micro-batches per epoch: 2" in plan.render()
    # the knobs named really fix it, and the count is what the sampler yields
    assert plan_for(tmp_path, registry, [dataset], train_batch_size=4, gradient_accumulation_steps=2).ok
    fixed = plan_for(tmp_path, registry, [ds(crop_aspect="preserve", repeats=1)], train_batch_size=4,
                     gradient_accumulation_steps=3)
    assert fixed.ok and fixed.micro_batches_per_epoch == 6
    assert len(BucketBatchSampler(fixed.samples, [ds(crop_aspect="preserve", repeats=1)], 4, seed=0)) == 6


def test_processes_and_probability_count(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=4)
    plan = plan_for(tmp_path, registry, [ds()], train_batch_size=2, processes=3)
    assert [e.path for e in plan.errors] == ["train_batch_size"] and "processes (3)" in plan.errors[0].message
    write_demo_dataset(tmp_path / "more", count=8)
    datasets = [ds(), ds(id="more", instance_data_dir="more", probability=0.5)]
    plan = plan_for(tmp_path, registry, datasets, train_batch_size=2, processes=2)
    assert plan.ok and plan.micro_batches_per_epoch == 1 + 1  # 4 // 4, then half of 8 // 4
    assert len(BucketBatchSampler(plan.samples, datasets, 2, seed=0, num_replicas=2)) == 2
    assert "before probability" in plan.render()


def test_small_bucket_dropped_but_plan_ok(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=4)
    image(tmp_path / "images" / "wide.png", (128, 64))
    plan = plan_for(tmp_path, registry, [ds(crop_aspect="preserve")], train_batch_size=2)
    assert plan.ok and plan.buckets == {"64x64": 4}
    [dropped] = plan.filtered
    assert "bucket 128x64" in dropped.reason
    assert "bucket 128x64 of dataset 'demo'" in plan.render()


def test_missing_directory_is_a_plan_error(tmp_path: Path, registry: Registry) -> None:
    plan = plan_for(tmp_path, registry, [ds(instance_data_dir="nowhere")])
    assert [e.path for e in plan.errors] == ["[0].instance_data_dir"]
    assert "nowhere" in plan.errors[0].message


def test_text_embeds_and_conditioning_are_reported(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=2)
    write_demo_dataset(tmp_path / "refs", count=3)
    datasets = [ds(conditioning_data=["refs"]), ds(id="refs", dataset_type="conditioning", instance_data_dir="refs"),
                DatasetConfig(id="text", dataset_type="text_embeds", default=True)]
    plan = plan_for(tmp_path, registry, datasets)
    assert plan.ok
    summaries = {d.id: d for d in plan.datasets}
    assert summaries["refs"].found == 3 and summaries["text"].found == 0
    assert {s.dataset_id for s in plan.samples} == {"demo"}
    assert "text (text_embeds)" in plan.render()


def test_filename_and_instanceprompt_captions(tmp_path: Path, registry: Registry) -> None:
    image(tmp_path / "a" / "red_fox-in_snow (2).png", (64, 64), caption=None)
    image(tmp_path / "a" / "blue-car_003.png", (64, 64), caption=None)
    plan = plan_for(tmp_path, registry, [ds(instance_data_dir="a", caption_strategy="filename")])
    assert sorted(s.caption for s in plan.samples) == ["blue car", "red fox in snow"]
    plan = plan_for(tmp_path, registry, [ds(instance_data_dir=str(tmp_path / "a"), caption_strategy="instanceprompt",
                                            instance_prompt="sks dog")])
    assert {s.caption for s in plan.samples} == {"sks dog"}


def test_exif_rotation_swaps_size(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "images" / "rotated.jpg"
    path.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.new("RGB", (128, 64), "blue").save(path, exif=exif)
    path.with_suffix(".txt").write_text("a rotated photo")
    assert read_image_size(path.read_bytes()) == (64, 128)
    plan = plan_for(tmp_path, registry, [ds(crop_aspect="preserve")])
    [sample] = plan.samples
    assert sample.original_size == (64, 128) and sample.plan.target_size == (64, 128)


def test_preflight_does_not_import_torch() -> None:
    code = ("import sys, simpletuner_core.data.preflight, simpletuner_core.data.sampler, "
            "simpletuner_core.data.config, simpletuner_core.data.cache, simpletuner_core.data.images, "
            "simpletuner_core.builtins.data, simpletuner_core.demo_data; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_minimum_image_size_applies_where_the_dataset_sets_none(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=2)
    image(tmp_path / "images" / "small.png", (40, 40))
    plan = plan_for(tmp_path, registry, [ds()], minimum_image_size=48)
    [filtered] = plan.filtered
    assert Path(filtered.path).name == "small.png"
    assert filtered.reason == "smaller than minimum_image_size 48 (pixel): shorter edge 40 px"
    assert plan.ok and len(plan.samples) == 2
    # the dataset's own value wins, and its 0 turns the minimum off (SimpleTuner's "unset")
    assert len(plan_for(tmp_path, registry, [ds(minimum_image_size=32)], minimum_image_size=48).samples) == 3
    assert len(plan_for(tmp_path, registry, [ds(minimum_image_size=0)], minimum_image_size=48).samples) == 3
    assert len(plan_for(tmp_path, registry, [ds()]).samples) == 3


def test_config_minimum_image_size_in_the_wrong_unit_is_refused(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=2)
    area = ds(resolution=0.25, resolution_type="area")
    plan = plan_for(tmp_path, registry, [area], minimum_image_size=512)
    [err] = plan.errors
    assert err.path == "minimum_image_size"
    assert "dataset 'demo'" in err.message and "512 megapixels" in err.message
    assert plan_for(tmp_path, registry, [attrs.evolve(area, minimum_image_size=0.001)], minimum_image_size=512).ok


def test_aspect_bucket_rounding_groups_close_shapes(tmp_path: Path, registry: Registry) -> None:
    # 1.00 and 1.04: one 256x256 bucket at 1 decimal, at 3 decimals 1.04 gets its own 264x248 bucket
    image(tmp_path / "images" / "square.png", (200, 200))
    image(tmp_path / "images" / "wider.png", (208, 200))
    dataset = ds(resolution=256, resolution_type="pixel_area", crop=False)
    kw: dict[str, Any] = {"size_multiple": 8}
    coarse = plan_for(tmp_path, registry, [dataset], aspect_bucket_rounding=1, **kw)
    assert coarse.buckets == {"256x256": 2}
    fine = plan_for(tmp_path, registry, [dataset], aspect_bucket_rounding=3, **kw)
    assert fine.buckets == {"256x256": 1, "264x248": 1}
    assert {Path(s.path).name: s.bucket for s in fine.samples} == {"square.png": "256x256", "wider.png": "264x248"}
    assert plan_for(tmp_path, registry, [dataset], **kw).buckets == fine.buckets  # default 2 decimals: 1.04


def test_disable_bucket_pruning_keeps_the_small_bucket(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=4)
    image(tmp_path / "images" / "wide.png", (128, 64))
    dataset = ds(crop_aspect="preserve")
    pruned = plan_for(tmp_path, registry, [dataset], train_batch_size=2)
    [dropped] = pruned.filtered
    assert Path(dropped.path).name == "wide.png"
    assert dropped.reason == ("bucket 128x64 of dataset 'demo' holds 1 image(s), fewer than train_batch_size (2) × "
                              "processes (1) = 2 (disable_bucket_pruning keeps it)")
    kept = plan_for(tmp_path, registry, [dataset], train_batch_size=2, disable_bucket_pruning=True)
    assert kept.ok and not kept.filtered
    assert kept.buckets == {"64x64": 4, "128x64": 1} and kept.micro_batches_per_epoch == 2 + 1
    sampler = BucketBatchSampler(kept.samples, [dataset], 2, seed=0, pad_remainders=True)
    batches = sampler.batches(0)
    assert len(sampler) == len(batches) == kept.micro_batches_per_epoch
    wide = [b for b in batches if kept.samples[b[0]].bucket == "128x64"]
    assert [[Path(kept.samples[i].path).name for i in b] for b in wide] == [["wide.png", "wide.png"]]
    assert batches == BucketBatchSampler(kept.samples, [dataset], 2, seed=0, pad_remainders=True).batches(0)


def test_disable_bucket_pruning_rescues_an_impossible_plan(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=3)
    assert [e.path for e in plan_for(tmp_path, registry, [ds()], train_batch_size=4).errors] == ["train_batch_size"]
    plan = plan_for(tmp_path, registry, [ds()], train_batch_size=4, disable_bucket_pruning=True,
                    gradient_accumulation_steps=2)
    [err] = plan.errors  # one padded micro-batch: still short of two for an optimizer step, and it says why
    assert err.path == "gradient_accumulation_steps" and "padded to a full batch" in err.message
    assert plan_for(tmp_path, registry, [ds()], train_batch_size=4, disable_bucket_pruning=True).ok


def test_inert_dataloader_keys_are_named_in_the_plan(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=2)
    write_demo_dataset(tmp_path / "refs", count=2)
    datasets = [
        ds(skip_file_discovery="vae, aspect", cache_dir="/somewhere", crop=False, crop_style="center",
           target_downsample_size=512, instance_prompt="sks", conditioning_data=["refs"]),
        ds(id="refs", dataset_type="conditioning", instance_data_dir="refs", repeats=2),
        DatasetConfig(id="text", dataset_type="text_embeds", default=True, probability=0.5, cache_dir_vae="/x"),
    ]
    plan = plan_for(tmp_path, registry, datasets)
    assert plan.ok
    named = {w.split(" ", 1)[0]: w for w in plan.warnings if "has no effect" in w}
    assert set(named) == {"[0].skip_file_discovery", "[0].cache_dir", "[0].crop_style", "[0].target_downsample_size",
                          "[0].instance_prompt", "[1].repeats", "[1].resolution", "[1].resolution_type", "[1].crop",
                          "[2].probability", "[2].cache_dir_vae"}
    assert "vae: latents are looked up by a hash" in named["[0].skip_file_discovery"]
    assert "aspect: buckets are computed" in named["[0].skip_file_discovery"]
    assert "only applies to dataset_type text_embeds, not 'image'" in named["[0].cache_dir"]
    assert "only applies with crop: true" in named["[0].crop_style"]
    assert "reference_strict" in named["[1].resolution"]
    assert "[0].skip_file_discovery (dataset 'demo') has no effect" in plan.render()
    # SimpleTuner's own examples carry an empty skip_file_discovery: nothing to report
    assert not any("has no effect" in w for w in plan_for(tmp_path, registry, [ds(skip_file_discovery="")]).warnings)


def test_plan_only_uses_the_config_keys(tmp_path: Path, isolated_plugins: Any) -> None:
    from simpletuner_core.config import validate
    from simpletuner_core.training.engine import plan_only

    isolated_plugins(SIMPLETUNER_LOAD_PLUGINS="pixart")
    write_demo_dataset(tmp_path / "images", count=4)
    image(tmp_path / "images" / "small.png", (40, 40))
    image(tmp_path / "images" / "wide.png", (128, 64))
    image(tmp_path / "images" / "wider.png", (214, 100))  # 2.14: 144x64 at 2 decimals, 2.1 → 128x64 at 1
    loader = tmp_path / "loader.json"
    loader.write_text(json.dumps([{"id": "demo", "instance_data_dir": "images", "resolution": 64,
                                   "resolution_type": "pixel", "crop": True, "crop_aspect": "preserve"}]))
    cfg = validate({"model_family": "pixart_sigma", "model_flavour": "tiny", "model_type": "full",
                    "output_dir": str(tmp_path / "out"), "data_backend_config": str(loader), "max_train_steps": 1,
                    "train_batch_size": 3, "minimum_image_size": 48, "disable_bucket_pruning": True,
                    "aspect_bucket_rounding": 1})
    plan = plan_only(cfg, tmp_path / "home")
    assert [Path(f.path).name for f in plan.filtered] == ["small.png"]
    assert plan.buckets == {"64x64": 4, "128x64": 2} and plan.micro_batches_per_epoch == 2 + 1
