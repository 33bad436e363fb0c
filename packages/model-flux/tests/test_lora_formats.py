"""Flux LoRA files: golden key sets per format, exact ComfyUI round trips, init_lora and ``lora inspect``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import validate
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry
from simpletuner_core.training.lora_io import LoraFileError, load_init_lora, save_adapter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flux_helpers import flux_config, image_dataloader, transformer_inputs

# A change in the saved key set breaks every downstream loader: update these only on purpose.
GOLDEN_DIFFUSERS_MODULES = [
    "transformer.single_transformer_blocks.0.attn.to_k", "transformer.single_transformer_blocks.0.attn.to_q",
    "transformer.single_transformer_blocks.0.attn.to_v", "transformer.single_transformer_blocks.1.attn.to_k",
    "transformer.single_transformer_blocks.1.attn.to_q", "transformer.single_transformer_blocks.1.attn.to_v",
    "transformer.transformer_blocks.0.attn.add_k_proj", "transformer.transformer_blocks.0.attn.add_q_proj",
    "transformer.transformer_blocks.0.attn.add_v_proj", "transformer.transformer_blocks.0.attn.to_add_out",
    "transformer.transformer_blocks.0.attn.to_k", "transformer.transformer_blocks.0.attn.to_out.0",
    "transformer.transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.attn.to_v",
]
GOLDEN_DIFFUSERS = sorted(f"{m}.lora_{ab}.weight" for m in GOLDEN_DIFFUSERS_MODULES for ab in "AB")
GOLDEN_COMFYUI_MODULES = [
    "lora_unet_double_blocks_0_img_attn_proj", "lora_unet_double_blocks_0_img_attn_qkv",
    "lora_unet_double_blocks_0_txt_attn_proj", "lora_unet_double_blocks_0_txt_attn_qkv",
    "lora_unet_single_blocks_0_linear1", "lora_unet_single_blocks_1_linear1",
]
GOLDEN_COMFYUI = sorted(f"{m}.{suffix}" for m in GOLDEN_COMFYUI_MODULES
                        for suffix in ("alpha", "lora_down.weight", "lora_up.weight"))


def _adapted(home: Path, cfg: Any, rank: int = 4, alpha: float = 4.0, randomise: bool = True) -> tuple[Any, Any]:
    """A tiny Flux transformer with a LoRA whose B weights are random (a fresh LoRA is a no-op)."""
    import torch

    from simpletuner_flux.trainer import FluxTrainer

    config = validate(cfg(lora_rank=rank, lora_alpha=alpha))
    registry = get_registry()
    trainer = FluxTrainer(config, registry.family("flux"), home)
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    model = trainer.trainable()
    adapter = registry.adapters.get("standard").apply(model, config, trainer.lora_targets)
    if randomise:
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model, adapter


def _out(model: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(**transformer_inputs()).sample


@pytest.fixture
def cfg(home: Path, tiny_flux_dir: Path, demo_images: Path) -> Any:
    def make(**overrides: Any) -> dict[str, Any]:
        return flux_config(home, tiny_flux_dir, image_dataloader(home, demo_images), **overrides)

    return make


def test_saved_key_sets_match_the_golden_lists(home: Path, cfg: Any) -> None:
    from safetensors import safe_open

    _, adapter = _adapted(home, cfg, randomise=False)
    registry, family = get_registry(), get_registry().family("flux")
    for fmt, golden in (("diffusers", GOLDEN_DIFFUSERS), ("comfyui", GOLDEN_COMFYUI)):
        path = save_adapter(adapter, family, registry.lora_formats.get(fmt), home / fmt)
        with safe_open(str(path), "pt") as fh:
            assert sorted(fh.keys()) == golden, fmt
            meta = fh.metadata()
        assert meta["format"] == fmt and meta["model_family"] == "flux"


@pytest.mark.parametrize(("fmt", "saved_alpha"), [("comfyui", 4.0), ("comfyui", 2.0), ("diffusers", 8.0)])
def test_init_lora_round_trip_is_exact(home: Path, cfg: Any, fmt: str, saved_alpha: float) -> None:
    import torch

    model, adapter = _adapted(home, cfg, alpha=saved_alpha)
    expected = _out(model)
    family = get_registry().family("flux")
    path = save_adapter(adapter, family, get_registry().lora_formats.get(fmt), home / "saved")
    fresh, fresh_adapter = _adapted(home, cfg, alpha=4.0, randomise=False)  # another alpha: rescaled on load
    assert not torch.allclose(_out(fresh), expected)
    assert load_init_lora(fresh_adapter, str(path), family) == fmt
    assert torch.allclose(_out(fresh), expected, atol=1e-5)


def test_comfyui_double_blocks_agree_with_diffusers_own_kohya_converter(home: Path, cfg: Any) -> None:
    """diffusers' loader for kohya Flux files is an independent oracle for names, fusing and alpha scaling."""
    import torch
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    from simpletuner_flux.comfyui import export

    _, adapter = _adapted(home, cfg, alpha=2.0)
    peft = {f"transformer.{k}": v for k, v in adapter.state_dict().items()}
    double = {k: v for k, v in export(peft, 2.0).items() if "double_blocks" in k}
    theirs = _convert_kohya_flux_lora_to_diffusers(dict(double))
    ours = {k: v for k, v in peft.items() if ".transformer_blocks." in k}
    assert sorted(theirs) == sorted(ours)
    for key in (k for k in ours if ".lora_A." in k):
        up = key.replace(".lora_A.", ".lora_B.")
        # diffusers loads with alpha = rank (scale 1); ours has scale alpha/rank = 0.5
        assert torch.allclose(theirs[up] @ theirs[key], 0.5 * ours[up] @ ours[key], atol=1e-6), key


def test_init_lora_through_the_engine_and_its_errors(home: Path, cfg: Any) -> None:
    _, adapter = _adapted(home, cfg)
    family = get_registry().family("flux")
    path = save_adapter(adapter, family, get_registry().lora_formats.get("comfyui"), home / "start")
    code, _ = run_job(validate(cfg(init_lora=str(path), max_train_steps=2)), home, get_registry(), job_id="init")
    assert code == 0
    logs = [e.data["message"] for e in read_events(home / "jobs" / "init" / "events.jsonl") if e.type == "log"]
    assert f"init_lora: loaded {path} (comfyui format)" in logs
    code, _ = run_job(validate(cfg(init_lora=str(path), lora_rank=8, max_train_steps=2)), home, get_registry(),
                      job_id="rank")
    assert code == 2
    failed = [e for e in read_events(home / "jobs" / "rank" / "events.jsonl") if e.type == "job.failed"]
    assert "has LoRA rank [4], but lora_rank is 8; set --lora_rank to match" in failed[0].data["reason"]
    with pytest.raises(LoraFileError, match="holds comfyui weights but lora_type is 'lycoris'"):
        fake = type("A", (), {"kind": "lycoris", "hyperparameters": {}})()
        load_init_lora(fake, str(path), family)


def test_lora_inspect_reports_format_family_rank_and_keys(home: Path, cfg: Any, capsys: Any) -> None:
    from simpletuner_core.cli.main import main

    _, adapter = _adapted(home, cfg)
    family = get_registry().family("flux")
    path = save_adapter(adapter, family, get_registry().lora_formats.get("comfyui"), home / "x")
    assert main(["lora", "inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["family"], info["rank"], info["keys"]) == ("comfyui", "flux", 4, 18)
    (home / "bad.safetensors").write_bytes(b"not safetensors")
    assert main(["lora", "inspect", str(home / "bad.safetensors")]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_a_module_comfyui_cannot_name_fails_before_training(home: Path, cfg: Any) -> None:
    raw = cfg(lora_format="comfyui", lora_target_modules="to_q,proj_out", max_train_steps=2)
    code, _ = run_job(validate(raw), home, get_registry(), job_id="names")
    assert code == 2
    events = read_events(home / "jobs" / "names" / "events.jsonl")
    reason = next(e for e in events if e.type == "job.failed").data["reason"]
    assert "Flux module 'proj_out' has no ComfyUI name" in reason
    assert not any(e.type == "training.status" for e in events)


def _comfyui_file(home: Path, cfg: Any, name: str, edit: Any) -> tuple[Path, Any]:
    """A saved ComfyUI LoRA, rewritten by ``edit(state) -> state``, and a fresh adapter to load it into."""
    from safetensors.torch import load_file, save_file

    _, adapter = _adapted(home, cfg)
    family = get_registry().family("flux")
    path = save_adapter(adapter, family, get_registry().lora_formats.get("comfyui"), home / name)
    save_file(edit(load_file(str(path))), str(path), metadata={"format": "comfyui", "model_family": "flux"})
    return path, _adapted(home, cfg, randomise=False)[1]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: {**s, "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": s[
        "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight"].clone()},
     "unsupported text-encoder LoRA (lora_te*): 1 key(s)"),
    (lambda s: {**s, "lora_unet_double_blocks_0_img_attn_proj.dora_scale": s[
        "lora_unet_double_blocks_0_img_attn_proj.alpha"].clone()}, "unsupported DoRA (.dora_scale): 1 key(s)"),
    (lambda s: {**s, "lora_unet_double_blocks_0_img_mlp_0.lokr_w1": s[
        "lora_unet_double_blocks_0_img_attn_proj.alpha"].clone()}, "unsupported .lokr_w1: 1 key(s)"),
    (lambda s: {k: v for k, v in s.items() if k != "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight"},
     "lora_unet_double_blocks_0_img_attn_proj has no lora_up weight"),
])
def test_comfyui_weights_the_loader_cannot_use_are_refused(home: Path, cfg: Any, edit: Any, message: str) -> None:
    path, fresh = _comfyui_file(home, cfg, "odd", edit)
    with pytest.raises(LoraFileError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        load_init_lora(fresh, str(path), get_registry().family("flux"))


def test_comfyui_diffusion_model_keys_are_not_taken_for_a_loadable_file(home: Path, cfg: Any) -> None:
    """``diffusion_model.*`` keys were detected as comfyui but never read: init_lora loaded nothing."""
    def renamed(state: dict[str, Any]) -> dict[str, Any]:
        return {k.replace("lora_unet_", "diffusion_model."): v for k, v in state.items()}

    path, fresh = _comfyui_file(home, cfg, "dm", renamed)
    with pytest.raises(LoraFileError, match="keys match no known LoRA format"):
        load_init_lora(fresh, str(path), get_registry().family("flux"))


def test_a_file_that_yields_no_weights_is_refused(home: Path, cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loader that reads nothing must not let init_lora report success."""
    import simpletuner_flux.comfyui

    path, fresh = _comfyui_file(home, cfg, "none", lambda s: s)
    monkeypatch.setattr(simpletuner_flux.comfyui, "load", lambda state: ({}, None))
    with pytest.raises(LoraFileError, match="no adapter weights could be read from it"):
        load_init_lora(fresh, str(path), get_registry().family("flux"))


@pytest.mark.parametrize("declared_alpha", [2.0, None])
def test_init_lora_from_diffusers_own_save_lora_weights_keeps_its_scale(home: Path, cfg: Any,
                                                                        declared_alpha: float | None) -> None:
    """A file written by diffusers (no metadata of ours): its ``lora_adapter_metadata`` alpha is used, and without
    one the alpha is the rank, as diffusers' loader assumes."""
    import torch
    from diffusers import FluxPipeline

    model, adapter = _adapted(home, cfg, rank=4, alpha=declared_alpha or 4.0)
    expected = _out(model)
    metadata = None
    if declared_alpha is not None:
        metadata = {"r": 4, "lora_alpha": declared_alpha, "target_modules": adapter.hyperparameters["target_modules"]}
    FluxPipeline.save_lora_weights(home / "theirs", transformer_lora_layers=adapter.state_dict(),
                                   transformer_lora_adapter_metadata=metadata)
    fresh, fresh_adapter = _adapted(home, cfg, rank=4, alpha=8.0, randomise=False)
    assert load_init_lora(fresh_adapter, str(home / "theirs" / "pytorch_lora_weights.safetensors"),
                          get_registry().family("flux")) == "diffusers"
    assert torch.allclose(_out(fresh), expected, atol=1e-5)


@pytest.mark.parametrize("zero_up", ["every lora_B (an untrained LoRA)", "one part of a fused module"])
def test_comfyui_round_trip_keeps_fused_parts_whose_lora_up_is_zero(home: Path, cfg: Any, zero_up: str) -> None:
    import torch

    _, adapter = _adapted(home, cfg, randomise=zero_up != "every lora_B (an untrained LoRA)")
    if zero_up == "one part of a fused module":
        with torch.no_grad():
            for name, p in adapter.state_dict().items():  # the live LoRA tensors
                if "transformer_blocks.0.attn.to_k.lora_B" in name and "single" not in name:
                    p.zero_()
    saved = {k: v.clone() for k, v in adapter.state_dict().items()}
    assert not saved["transformer_blocks.0.attn.to_k.lora_B.weight"].any()
    assert saved["transformer_blocks.0.attn.to_k.lora_A.weight"].any()
    family = get_registry().family("flux")
    path = save_adapter(adapter, family, get_registry().lora_formats.get("comfyui"), home / "zeros")
    _, fresh = _adapted(home, cfg, randomise=False)
    load_init_lora(fresh, str(path), family)
    loaded = fresh.state_dict()
    assert sorted(loaded) == sorted(saved)
    for key, value in saved.items():
        assert torch.allclose(loaded[key], value, atol=1e-6), key
