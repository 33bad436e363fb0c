"""Shared fixtures: one tiny PixArt pipeline and one demo dataset per test session (per xdist worker)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("SIMPLETUNER_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two xdist workers × torch's default of one OpenMP thread per core oversubscribe a 2-core box: the tiny-model
    # tests measured 4× slower (87 s vs 23 s for the flux tests). Set before torch is imported; trainer
    # subprocesses inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_pixart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simpletuner_pixart.tiny import ensure_tiny_pipeline

    return ensure_tiny_pipeline(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_taesd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init diffusers AutoencoderTiny for 4-channel latents (8x upsampling), saved like a hub repo."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    vae = AutoencoderTiny(in_channels=3, out_channels=3, latent_channels=4, encoder_block_out_channels=(8, 8, 8, 8),
                          decoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 1, 1, 1),
                          num_decoder_blocks=(1, 1, 1, 1))
    target = tmp_path_factory.mktemp("models") / "taesd-tiny"
    vae.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def demo_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simpletuner_core.demo_data import write_demo_dataset

    directory = tmp_path_factory.mktemp("demo") / "images"
    write_demo_dataset(directory, count=12, size=64)
    return directory


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "home"
    state.mkdir()
    monkeypatch.setenv("SIMPLETUNER_HOME", str(state))
    return state


def write_dataloader(home: Path, images: Path, **image_overrides: Any) -> Path:
    path = home / "config" / "multidatabackend.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    image = {"id": "toy", "type": "local", "dataset_type": "image", "instance_data_dir": str(images),
             "caption_strategy": "textfile", "resolution": 64, "resolution_type": "pixel_area", "crop": True,
             "crop_style": "center", "crop_aspect": "square", "cache_dir_vae": str(home / "cache" / "vae"),
             **image_overrides}
    text = {"id": "toy-text", "type": "local", "dataset_type": "text_embeds", "default": True,
            "cache_dir": str(home / "cache" / "text")}
    path.write_text(json.dumps([image, text]))
    return path


#: The defaults the tests were written against, before SimpleTuner's became ours (each test states what it needs).
TEST_PINS = {"--optimizer": "adamw", "--lr_scheduler": "constant", "--max_grad_norm": 1.0,
             "--grad_clip_method": "norm", "--gradient_checkpointing": False, "--lora_dropout": 0.0,
             "--caption_dropout_probability": 0.0, "--checkpoints_total_limit": None,
             "--resume_from_checkpoint": None, "--validation_negative_prompt": None,
             "--validation_guidance": 4.5, "--validation_num_inference_steps": 20, "--disable_benchmark": True}
# (disable_benchmark: tests count validation images; the step-0 base-model render is tested on its own)


def tiny_config(home: Path, tiny_dir: Path, images: Path, **overrides: Any) -> dict[str, Any]:
    """A wire-format config for the tiny PixArt model on the demo set."""
    from simpletuner_core.config.migrations import overlay

    dataloader = write_dataloader(home, images)
    return overlay({
        "--model_family": "pixart_sigma", "--model_flavour": "tiny",
        "--pretrained_model_name_or_path": str(tiny_dir), "--model_type": "full",
        "--output_dir": str(home / "output"), "--data_backend_config": str(dataloader),
        "--train_batch_size": 4, "--learning_rate": 1e-3, "--max_train_steps": 30, "--seed": 7,
        "--checkpoint_step_interval": 0, "--report_to": "none", **TEST_PINS,
    }, {k if k.startswith("--") else f"--{k}": v for k, v in overrides.items()})


@pytest.fixture
def tiny_cfg(home: Path, tiny_pixart_dir: Path, demo_images: Path) -> Any:
    def make(**overrides: Any) -> dict[str, Any]:
        return tiny_config(home, tiny_pixart_dir, demo_images, **overrides)

    return make


@pytest.fixture
def isolated_plugins(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Call with env switches (e.g. ``SIMPLETUNER_LOAD_PLUGINS="pixart"``); the manager is rebuilt, then reset."""
    from simpletuner_core.plugins import reset_plugin_manager

    def use(**switches: str) -> None:
        for name in ("SIMPLETUNER_DISABLE_PLUGIN_AUTOLOAD", "SIMPLETUNER_LOAD_PLUGINS"):
            monkeypatch.delenv(name, raising=False)
        for name, value in switches.items():
            monkeypatch.setenv(name, value)
        reset_plugin_manager()

    yield use
    reset_plugin_manager()


@pytest.fixture(scope="session")
def data_registry() -> Any:
    """A registry holding only core's data plugin, built through the real plugin machinery."""
    import pluggy

    from simpletuner_core import hookspecs
    from simpletuner_core.builtins import data as builtin_data
    from simpletuner_core.plugins.registry import Registry

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin_data, name="simpletuner_core.builtins.data")
    return Registry(pm)
