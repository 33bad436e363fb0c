"""Dataloader JSON parsing: the tutorial's files parse, and every mistake comes back with a path and a hint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config.errors import ConfigError, ConfigInvalid
from simpletuner_core.data.config import DatasetConfig, dump_dataloader, load_dataloader, parse_dataloader
from simpletuner_core.plugins.registry import Registry

TUTORIAL_PIXART: list[dict[str, Any]] = [
    {"id": "pixart-camera", "type": "local", "dataset_type": "image",
     "instance_data_dir": "/data/datasets/pseudo-camera-10k", "caption_strategy": "filename", "resolution": 1.0,
     "resolution_type": "area", "minimum_image_size": 0.25, "maximum_image_size": 1.0,
     "target_downsample_size": 1.0, "cache_dir_vae": "/data/cache/vae/pixart/pseudo-camera-10k", "crop": True,
     "crop_style": "random", "crop_aspect": "square", "metadata_backend": "discovery"},
    {"id": "pixart-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
     "cache_dir": "/data/cache/text/pixart/pseudo-camera-10k", "write_batch_size": 128},
]

TUTORIAL_KONTEXT: list[dict[str, Any]] = [
    {"id": "kontext-edit", "type": "local", "dataset_type": "image", "instance_data_dir": "/data/datasets/kontext/edit",
     "conditioning_data": ["kontext-reference"], "resolution": 1024, "resolution_type": "pixel_area",
     "caption_strategy": "textfile", "minimum_image_size": 768, "maximum_image_size": 1536,
     "target_downsample_size": 1024, "cache_dir_vae": "/data/cache/vae/kontext/edit", "crop": True,
     "crop_style": "random", "crop_aspect": "square"},
    {"id": "kontext-reference", "type": "local", "dataset_type": "conditioning",
     "instance_data_dir": "/data/datasets/kontext/reference", "conditioning_type": "reference_strict",
     "resolution": 1024, "resolution_type": "pixel_area", "cache_dir_vae": "/data/cache/vae/kontext/reference"},
    {"id": "kontext-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
     "cache_dir": "/data/cache/text/kontext"},
]


@pytest.fixture
def registry(data_registry: Registry) -> Registry:
    return data_registry


def errors_of(raw: Any, registry: Registry) -> list[ConfigError]:
    with pytest.raises(ConfigInvalid) as info:
        parse_dataloader(raw, registry)
    return info.value.errors


def by_path(errors: list[ConfigError]) -> dict[str, ConfigError]:
    return {e.path: e for e in errors}


def test_tutorial_pixart_parses(registry: Registry) -> None:
    image, text = parse_dataloader(TUTORIAL_PIXART, registry)
    assert image == DatasetConfig(
        id="pixart-camera", instance_data_dir="/data/datasets/pseudo-camera-10k", caption_strategy="filename",
        resolution=1.0, resolution_type="area", minimum_image_size=0.25, maximum_image_size=1.0,
        target_downsample_size=1.0, cache_dir_vae="/data/cache/vae/pixart/pseudo-camera-10k", crop=True,
    )
    assert text.dataset_type == "text_embeds" and text.default and text.write_batch_size == 128


def test_tutorial_kontext_parses(registry: Registry) -> None:
    edit, reference, text = parse_dataloader(TUTORIAL_KONTEXT, registry)
    assert edit.conditioning_data == ["kontext-reference"]
    assert edit.resolution == 1024.0 and isinstance(edit.resolution, float)
    assert reference.dataset_type == "conditioning" and reference.conditioning_type == "reference_strict"
    assert text.default


def test_default_registry_has_core_data_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    from simpletuner_core.plugins import get_registry, reset_plugin_manager

    monkeypatch.setenv("SIMPLETUNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    try:
        reg = get_registry()
        assert "local" in reg.data_backends
        assert reg.caption_strategies.names() == ["filename", "instanceprompt", "textfile"]
        assert len(parse_dataloader(TUTORIAL_PIXART)) == 2  # registry=None uses the process registry
    finally:
        reset_plugin_manager()


def test_unknown_key_has_path_and_did_you_mean(registry: Registry) -> None:
    raw = [{**TUTORIAL_PIXART[0], "cropp": True}, TUTORIAL_PIXART[1]]
    [err] = errors_of(raw, registry)
    assert err.path == "[0].cropp"
    assert err.did_you_mean == "crop"


def test_bad_enum_has_choices_and_suggestion(registry: Registry) -> None:
    raw = [TUTORIAL_PIXART[1], {**TUTORIAL_PIXART[0], "crop_style": "centre"}]
    [err] = errors_of(raw, registry)
    assert err.path == "[1].crop_style"
    assert "random, center, corner" in err.message
    assert err.did_you_mean == "center"


def test_unregistered_backend_and_caption_strategy(registry: Registry) -> None:
    raw = [{**TUTORIAL_PIXART[0], "type": "locall", "caption_strategy": "textfiles"}]
    errs = by_path(errors_of(raw, registry))
    assert errs["[0].type"].did_you_mean == "local"
    assert errs["[0].caption_strategy"].did_you_mean == "textfile"


def test_missing_instance_data_dir(registry: Registry) -> None:
    raw = [{"id": "x", "dataset_type": "image"}]
    assert "[0].instance_data_dir" in by_path(errors_of(raw, registry))


def test_conditioning_data_must_name_a_conditioning_dataset(registry: Registry) -> None:
    raw = [{**TUTORIAL_KONTEXT[0], "conditioning_data": ["kontext-referense", "kontext-text-embeds"]},
           *TUTORIAL_KONTEXT[1:]]
    errs = by_path(errors_of(raw, registry))
    assert errs["[0].conditioning_data[0]"].did_you_mean == "kontext-reference"
    assert "text_embeds" in errs["[0].conditioning_data[1]"].message


def test_metadata_backend_json_is_a_clear_error(registry: Registry) -> None:
    [err] = errors_of([{**TUTORIAL_PIXART[0], "metadata_backend": "json"}], registry)
    assert err.path == "[0].metadata_backend" and "discovery" in err.message


def test_all_errors_collected_at_once(registry: Registry) -> None:
    raw = [
        {"id": "a", "instance_data_dir": "x", "cropp": 1, "crop_style": "centre", "repeats": "lots",
         "probability": 2},
        {"id": "a", "instance_data_dir": "y", "caption_strategy": "instanceprompt", "resolution": -1},
        {"id": "t1", "dataset_type": "text_embeds", "default": True},
        {"id": "t2", "dataset_type": "text_embeds", "default": True},
        "not an object",
    ]
    paths = {e.path for e in errors_of(raw, registry)}
    assert {"[0].cropp", "[0].crop_style", "[0].repeats", "[0].probability",
            "[1].instance_prompt", "[1].resolution", "[4]"} <= paths


def test_cross_dataset_rules(registry: Registry) -> None:
    raw = [
        {"id": "a", "instance_data_dir": "x"},
        {"id": "a", "instance_data_dir": "y", "probability": 0},
        {"id": "t1", "dataset_type": "text_embeds", "default": True},
        {"id": "t2", "dataset_type": "text_embeds", "default": True},
    ]
    errs = by_path(errors_of(raw, registry))
    assert "duplicate id" in errs["[1].id"].message
    assert "[3].default" in errs


def test_needs_an_image_dataset_with_probability(registry: Registry) -> None:
    assert errors_of([], registry)[0].path == "data_backend_config"
    assert errors_of({"id": "a"}, registry)[0].path == "data_backend_config"
    [err] = errors_of([TUTORIAL_PIXART[1]], registry)
    assert err.path == "data_backend_config" and "image" in err.message
    [err] = errors_of([{**TUTORIAL_PIXART[0], "probability": 0}], registry)
    assert "probability" in err.message


def test_unit_mixups_are_caught(registry: Registry) -> None:
    [err] = errors_of([{**TUTORIAL_PIXART[0], "resolution": 1024}], registry)
    assert err.path == "[0].resolution" and err.did_you_mean == "pixel_area"


def test_load_dataloader_file_errors(tmp_path: Path, registry: Registry) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigInvalid) as info:
        load_dataloader(missing, registry)
    [err] = info.value.errors
    assert err.path == "data_backend_config" and str(missing) in err.message

    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "a",}]')
    with pytest.raises(ConfigInvalid) as info:
        load_dataloader(broken, registry)
    [err] = info.value.errors
    assert err.path == "data_backend_config" and "broken.json" in err.message and "line 1" in err.message

    good = tmp_path / "multidatabackend.json"
    good.write_text(json.dumps(TUTORIAL_KONTEXT))
    assert [d.id for d in load_dataloader(good, registry)] == [d["id"] for d in TUTORIAL_KONTEXT]


def test_dump_round_trips_and_stays_short(registry: Registry) -> None:
    datasets = parse_dataloader(TUTORIAL_KONTEXT, registry)
    dumped = dump_dataloader(datasets)
    assert parse_dataloader(json.loads(json.dumps(dumped)), registry) == datasets
    assert dumped[2] == {"id": "kontext-text-embeds", "dataset_type": "text_embeds", "default": True,
                         "cache_dir": "/data/cache/text/kontext"}
    assert len({hash(d) for d in datasets}) == 3


@pytest.mark.parametrize("bad", ["../../etc", "/abs", "a/b", "ok\n", "..", "a..b", ".hidden", "", " x", "a\\b",
                                 "x" * 129])
def test_id_must_be_a_safe_directory_name(registry: Registry, bad: str) -> None:
    errs = by_path(errors_of([{"id": bad, "instance_data_dir": "x"}], registry))
    assert "[0].id" in errs and "cache directory" in errs["[0].id"].message


def test_ordinary_ids_are_accepted(registry: Registry) -> None:
    ids = ["pixart-camera", "v1.2_final", "A", "x" * 128]
    parsed = parse_dataloader([{"id": i, "instance_data_dir": "x"} for i in ids], registry)
    assert [d.id for d in parsed] == ids


def test_skip_file_discovery_steps_are_checked(registry: Registry) -> None:
    image = {"id": "img", "instance_data_dir": "/data/img"}
    [ds] = parse_dataloader([{**image, "skip_file_discovery": "vae, aspect metadata text"}], registry)
    assert ds.skip_file_discovery == "vae, aspect metadata text"
    assert parse_dataloader([{**image, "skip_file_discovery": ""}], registry)[0].skip_file_discovery is None
    err = by_path(errors_of([{**image, "skip_file_discovery": "vae aspcet"}], registry))["[0].skip_file_discovery"]
    assert err.message == "unknown discovery step 'aspcet' (known: vae, aspect, text, metadata)"
    assert err.did_you_mean == "aspect"


def test_minimum_image_size_zero_means_none(registry: Registry) -> None:
    image = {"id": "img", "instance_data_dir": "/data/img"}
    assert parse_dataloader([{**image, "minimum_image_size": 0}], registry)[0].minimum_image_size == 0
    err = by_path(errors_of([{**image, "minimum_image_size": -1}], registry))["[0].minimum_image_size"]
    assert err.message == "must be 0 (no minimum) or more, got -1"
