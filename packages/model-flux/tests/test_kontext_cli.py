"""The tutorial's Flux Kontext LyCORIS example, end to end through the CLI on tiny-kontext (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_tutorial_kontext_example_trains_through_the_cli_and_changes_the_pipeline(tmp_path: Path) -> None:
    import torch
    from diffusers import FluxKontextPipeline
    from lycoris import LycorisNetwork, create_lycoris_from_weights
    from PIL import Image
    from safetensors import safe_open

    from simpletuner_core.plugins import get_registry
    from simpletuner_core.training.lora_io import inspect_lora
    from simpletuner_flux.examples import (
        EDIT_DATASET,
        EXAMPLE_NAME,
        REFERENCE_DATASET,
        write_tiny_kontext_example,
    )

    assert get_registry().examples.owner(EXAMPLE_NAME) == "flux"  # shipped as a template through the hook
    home = tmp_path / "state"
    write_tiny_kontext_example(home, overrides={"--max_train_steps": 12, "--validation_step_interval": 12})
    config = json.loads((home / "config" / EXAMPLE_NAME / "config.json").read_text())
    for key, value in {"--model_family": "flux", "--model_flavour": "tiny-kontext", "--model_type": "lora",
                       "--lora_type": "lycoris", "--optimizer": "optimi-lion", "--base_model_precision": "int8-quanto",
                       "--lora_rank": 16, "--lora_dropout": 0.05, "--conditioning_multidataset_sampling": "combined",
                       "--clip_skip": 2}.items():
        assert config[key] == value, key
    dataloader = json.loads((home / "config" / EXAMPLE_NAME / "multidatabackend.json").read_text())
    assert [d["id"] for d in dataloader] == ["kontext-edit", "kontext-reference", "kontext-text-embeds"]
    assert dataloader[0]["instance_data_dir"] == str(home / "datasets" / EDIT_DATASET)

    env = {**os.environ, "SIMPLETUNER_HOME": str(home), "SIMPLETUNER_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-m", "simpletuner_core.cli", "train", "--env", EXAMPLE_NAME],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    output = home / "output" / EXAMPLE_NAME
    assert "completed at step 12" in out.stdout
    assert (output / "checkpoint-10" / "manifest.json").exists()
    assert list((output / "validation").glob("step-000012-*.png"))
    weights = output / "pytorch_lycoris_weights.safetensors"
    info = inspect_lora(weights)
    assert (info["format"], info["family"], info["adapter"], info["rank"]) == ("lycoris", "flux", "lycoris", 16)

    pipe = FluxKontextPipeline.from_pretrained(str(home / "cache" / "models" / "flux-kontext-tiny-v1"))
    pipe.set_progress_bar_config(disable=True)
    reference = Image.open(sorted((home / "datasets" / REFERENCE_DATASET).glob("*.png"))[0]).convert("RGB")
    prompt = (home / "datasets" / EDIT_DATASET / "pair_000.txt").read_text().strip()

    def render() -> torch.Tensor:
        return pipe(image=reference, prompt=prompt, num_inference_steps=2, height=64, width=64,
                    max_sequence_length=16, _auto_resize=False, max_area=64 * 64, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images

    before = render()
    with safe_open(str(weights), "pt") as fh:
        preset = json.loads(fh.metadata()["adapter"])["preset"]
    LycorisNetwork.apply_preset(preset)  # global state: the preset the adapter was trained with
    net, _ = create_lycoris_from_weights(1.0, str(weights), pipe.transformer)
    net.merge_to()
    assert not torch.allclose(before, render(), atol=1e-4)
