"""Environments on disk in the tutorial's layout: create, load, save (replace or merge), list, export, delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simpletuner_core.config import environments as envs
from simpletuner_core.config.migrations import CURRENT_VERSION


def test_create_writes_the_tutorial_layout(tmp_path: Path) -> None:
    directory = envs.create_environment("pixart-api-demo", model_family="pixart_sigma",
                                        model_flavour="900M-1024-v0.6", model_type="full",
                                        description="PixArt 900M API-driven training", home=tmp_path)
    assert directory == tmp_path / "config" / "pixart-api-demo"
    config = json.loads((directory / "config.json").read_text())
    assert config["--model_family"] == "pixart_sigma" and config["--model_flavour"] == "900M-1024-v0.6"
    assert config["--data_backend_config"] == "pixart-api-demo/multidatabackend.json"
    dataloader = json.loads((directory / "multidatabackend.json").read_text())
    assert [d["dataset_type"] for d in dataloader] == ["image", "text_embeds"]
    assert envs.load_environment("pixart-api-demo", tmp_path)["metadata"]["description"].startswith("PixArt")
    with pytest.raises(envs.EnvironmentError_, match="already exists"):
        envs.create_environment("pixart-api-demo", model_family="pixart_sigma", home=tmp_path)


def test_save_replaces_by_default_and_merges_when_asked(tmp_path: Path) -> None:
    envs.create_environment("e1", model_family="pixart_sigma", home=tmp_path)
    envs.save_environment("e1", {"--learning_rate": 0.001}, merge=True, tags=["a"], home=tmp_path)
    merged = envs.load_environment("e1", tmp_path)
    assert merged["config"]["--learning_rate"] == 0.001 and merged["config"]["--model_family"] == "pixart_sigma"
    assert merged["metadata"]["tags"] == ["a"]
    envs.save_environment("e1", {"model_family": "pixart_sigma", "seed": 3}, home=tmp_path)
    replaced = envs.load_environment("e1", tmp_path)["config"]
    assert replaced == {"--model_family": "pixart_sigma", "--seed": 3, "--config_version": CURRENT_VERSION}


def test_list_export_delete(tmp_path: Path) -> None:
    assert envs.list_environments(tmp_path) == []
    for name in ("b-env", "a_env"):
        envs.create_environment(name, model_family="pixart_sigma", home=tmp_path)
    (tmp_path / "config" / "not-an-env").mkdir()
    assert envs.list_environments(tmp_path) == ["a_env", "b-env"]
    exported = envs.export_environment("a_env", tmp_path)
    assert exported["format"] == "simpletuner-environment" and exported["dataloader"]
    envs.delete_environment("a_env", tmp_path)
    assert envs.list_environments(tmp_path) == ["b-env"]
    with pytest.raises(envs.EnvironmentError_, match=r"unknown environment 'a_env' \(known: b-env\)"):
        envs.load_environment("a_env", tmp_path)


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "../x", "a.b", "", "x" * 65, "-lead", "sp ace"])
def test_names_cannot_escape_the_config_dir(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid environment name"):
        envs.create_environment(bad, model_family="pixart_sigma", home=tmp_path)


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "x" / "config.json"
    envs.write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        envs.write_json_atomic(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"a": 1}  # the old content survives a failed write
    assert [p.name for p in target.parent.iterdir()] == ["config.json"]


def test_dataloader_path_resolution(tmp_path: Path) -> None:
    envs.create_environment("e2", model_family="pixart_sigma", home=tmp_path)
    found = envs.resolve_dataloader_path("e2/multidatabackend.json", tmp_path)
    assert found == tmp_path / "config" / "e2" / "multidatabackend.json"
    (tmp_path / "config" / "multidatabackend-once.json").write_text("[]")
    assert envs.resolve_dataloader_path("config/multidatabackend-once.json", tmp_path).exists()
    assert envs.resolve_dataloader_path("/abs/path.json", tmp_path) == Path("/abs/path.json")


def test_a_trailing_newline_is_not_a_valid_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid environment name"):
        envs.create_environment("evil\n", model_family="pixart_sigma", home=tmp_path)
