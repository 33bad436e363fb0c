"""The memory plan against real tensors: the tiny flavours' weights, adapters, gradients and optimizer states
counted after one real step must equal the plan's bytes exactly, and the activations autograd keeps must be
within 25 % of the estimate; the published shapes must build to the published parameter counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config import validate
from simpletuner_core.memory import Bucket, estimate, plan_for
from simpletuner_core.plugins import get_registry

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**keys: Any) -> Any:
    base = {"max_train_steps": 1, "output_dir": "/tmp/unused", "data_backend_config": "/nonexistent/mdb.json",
            "train_batch_size": 2, "gradient_checkpointing": False, "mixed_precision": "no", "lora_dropout": 0.0,
            "optimizer": "adamw"}
    return validate({**base, **keys}, get_registry())


def _bytes(t: Any) -> int:
    """Bytes of a tensor, a quanto QTensor counted by its inner tensors."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


class Saved:
    """Sums the distinct storages autograd keeps for backward (parameters excluded): activation memory."""

    def __init__(self, params: list[Any]) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in params if not hasattr(p, "__tensor_flatten__")}
        self.seen: dict[int, int] = {}

    def pack(self, t: Any) -> Any:
        if not hasattr(t, "__tensor_flatten__"):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in self.params:
                self.seen.setdefault(ptr, t.untyped_storage().nbytes())
        return t

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def _flux_inputs(torch: Any, batch: int, edge: int, text: int) -> dict[str, Any]:
    from simpletuner_flux.packing import latent_ids, pack
    from simpletuner_flux.tiny import TRANSFORMER

    lat = torch.randn(batch, TRANSFORMER["in_channels"] // 4, edge // 8, edge // 8)
    return {"hidden_states": pack(lat), "encoder_hidden_states": torch.randn(batch, text, 32),
            "pooled_projections": torch.randn(batch, 32), "timestep": torch.rand(batch),
            "guidance": torch.ones(batch), "img_ids": latent_ids(edge // 16, edge // 16),
            "txt_ids": torch.zeros(text, 3), "return_dict": False}


def _train_once(cfg: Any, model: Any, exclude: list[str], forward: Any) -> dict[str, int]:
    """Quantize, adapt and step ``model`` as the engine does; the bytes of each bucket, counted."""
    import torch

    reg = get_registry()
    if cfg.base_model_precision in reg.quantizers:
        reg.quantizers.get(cfg.base_model_precision).quantize(model, cfg, exclude=exclude)
    if cfg.model_type == "lora":
        arch = reg.family(cfg.model_family).memory_shapes(cfg.model_flavour, cfg)
        handle = reg.adapters.get(cfg.lora_type).apply(model, cfg, list(arch.lora_targets),
                                                       dict(arch.lycoris_presets))
        params = handle.params
        extra = list(handle.checkpoint_module.parameters()) if handle.checkpoint_module is not None else []
    else:
        model.requires_grad_(True)
        params, extra = list(model.parameters()), []
    trainable = {id(p) for p in params}
    optimizer = reg.optimizers.get(cfg.optimizer).factory(params, cfg)
    saved = Saved(list(model.parameters()) + extra)
    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        loss = forward(model)
    loss.backward()
    optimizer.step()
    frozen = [p for p in model.parameters() if id(p) not in trainable]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"base weights": sum(_bytes(p) for p in frozen) if cfg.model_type == "lora" else 0,
            "trainable weights": sum(_bytes(p) for p in params),
            "gradients": sum(_bytes(p.grad) for p in params if p.grad is not None),
            "optimizer states": sum(_bytes(v) for v in state), "activations": saved.total}


def _check(plan: Any, counted: dict[str, int]) -> None:
    for key in ("base weights", "trainable weights", "gradients", "optimizer states"):
        assert plan.breakdown[key] == counted[key], (key, plan.breakdown[key], counted[key])
    ratio = plan.breakdown["activations"] / counted["activations"]
    assert 0.75 <= ratio <= 1.25, (plan.breakdown["activations"], counted["activations"])


FLUX_CASES = {
    "lora": {},
    "lora-int8": {"base_model_precision": "int8-quanto"},
    "lora-int8-ffs": {"base_model_precision": "int8-quanto", "flux_lora_target": "all+ffs", "lora_rank": 4},
    "lycoris-lokr-lion": {"lora_type": "lycoris", "base_model_precision": "int8-quanto", "optimizer": "optimi-lion"},
    "full": {"model_type": "full"},
}


@pytest.mark.parametrize("case", sorted(FLUX_CASES))
def test_tiny_flux_plan_matches_real_tensors(case: str) -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    from simpletuner_flux.shapes import QUANTIZE_EXCLUDE
    from simpletuner_flux.tiny import TRANSFORMER

    keys = {"model_family": "flux", "model_flavour": "tiny", "model_type": "lora", **FLUX_CASES[case]}
    cfg = _cfg(**keys)
    torch.manual_seed(0)
    model = FluxTransformer2DModel(**TRANSFORMER)
    edge, text = 128, 32
    inputs = _flux_inputs(torch, cfg.train_batch_size, edge, text)
    counted = _train_once(cfg, model, list(QUANTIZE_EXCLUDE), lambda m: m(**inputs)[0].float().pow(2).mean())
    reg = get_registry()
    family = reg.family("flux")
    arch = family.memory_shapes("tiny", cfg)
    from simpletuner_core.memory.config import _adapter

    plan = estimate(cfg, family, arch, Bucket(edge, edge), device="cpu", adapter=_adapter(cfg, arch))
    _check(plan, counted)


@pytest.mark.parametrize("case", ["full", "lora-int8"])
def test_tiny_pixart_plan_matches_real_tensors(case: str) -> None:
    import torch
    from diffusers import PixArtTransformer2DModel

    from simpletuner_pixart.shapes import QUANTIZE_EXCLUDE
    from simpletuner_pixart.tiny import TEXT_TOKENS, TRANSFORMER

    keys = {"model_family": "pixart_sigma", "model_flavour": "tiny", "model_type": "full"}
    if case == "lora-int8":
        keys.update(model_type="lora", base_model_precision="int8-quanto")
    cfg = _cfg(**keys)
    torch.manual_seed(0)
    model = PixArtTransformer2DModel(**TRANSFORMER)
    edge, b = 128, cfg.train_batch_size
    lat = torch.randn(b, 4, edge // 8, edge // 8)
    ctx, mask = torch.randn(b, TEXT_TOKENS, 32), torch.ones(b, TEXT_TOKENS)

    def forward(m: Any) -> Any:
        out = m(lat, encoder_hidden_states=ctx, encoder_attention_mask=mask, timestep=torch.tensor([10] * b),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        return out.chunk(2, dim=1)[0].float().pow(2).mean()

    counted = _train_once(cfg, model, list(QUANTIZE_EXCLUDE), forward)
    family = get_registry().family("pixart_sigma")
    arch = family.memory_shapes("tiny", cfg)
    from simpletuner_core.memory.config import _adapter

    plan = estimate(cfg, family, arch, Bucket(edge, edge), device="cpu", adapter=_adapter(cfg, arch))
    _check(plan, counted)


def test_frozen_components_match_the_tiny_pipelines() -> None:
    from simpletuner_flux.tiny import build_tiny_pipeline as flux_pipe
    from simpletuner_pixart.tiny import build_tiny_pipeline as pixart_pipe

    for family, pipe, parts in (("flux", flux_pipe(), ("text_encoder_2", "text_encoder", "vae")),
                                ("pixart_sigma", pixart_pipe(), ("text_encoder", "vae"))):
        arch = get_registry().family(family).memory_shapes("tiny", None)
        real = [sum(p.numel() for p in getattr(pipe, name).parameters()) for name in parts]
        assert [c.params for c in arch.components] == real
        assert arch.params == sum(p.numel() for p in pipe.transformer.parameters())


TUTORIAL_KONTEXT = {
    "--model_family": "flux", "--model_flavour": "kontext", "--model_type": "lora", "--lora_type": "lycoris",
    "--output_dir": "/workspace/output/kontext", "--train_batch_size": 1, "--gradient_accumulation_steps": 4,
    "--learning_rate": 0.00001, "--optimizer": "optimi-lion", "--max_train_steps": 12000, "--num_train_epochs": 0,
    "--base_model_precision": "int8-quanto", "--lora_rank": 16, "--lora_dropout": 0.05,
    "--conditioning_multidataset_sampling": "combined", "--clip_skip": 2, "--report_to": "none",
    "--data_backend_config": "multidatabackend.json"}
KONTEXT_DATALOADER = [
    {"id": "kontext-edit", "type": "local", "dataset_type": "image", "instance_data_dir": "/data/edit",
     "conditioning_data": ["kontext-reference"], "resolution": 1024, "resolution_type": "pixel_area",
     "caption_strategy": "textfile", "crop": True, "crop_style": "random", "crop_aspect": "square"},
    {"id": "kontext-reference", "type": "local", "dataset_type": "conditioning", "instance_data_dir": "/data/ref",
     "conditioning_type": "reference_strict", "resolution": 1024, "resolution_type": "pixel_area"},
    {"id": "kontext-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
     "cache_dir": "/data/text"}]
TUTORIAL_PIXART = {
    "--model_family": "pixart_sigma", "--model_flavour": "900M-1024-v0.6", "--model_type": "full",
    "--output_dir": "/workspace/output/pixart900m", "--train_batch_size": 2, "--optimizer": "adamw_bf16",
    "--max_train_steps": 1800, "--num_train_epochs": 0, "--base_model_precision": "bf16", "--report_to": "none",
    "--data_backend_config": "multidatabackend.json"}
PIXART_DATALOADER = [
    {"id": "pixart-camera", "type": "local", "dataset_type": "image", "instance_data_dir": "/data/camera",
     "caption_strategy": "filename", "resolution": 1.0, "resolution_type": "area", "crop": True,
     "crop_aspect": "square"},
    {"id": "pixart-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
     "cache_dir": "/data/text"}]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / "packages" / p / "src") for p in
                                                       ("core", "model-pixart", "model-flux"))}
    return subprocess.run([sys.executable, "-m", "simpletuner_core.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("name", ["kontext", "pixart"])
def test_tutorial_configs_plan_on_the_cli(tmp_path: Path, name: str) -> None:
    config, loader = (TUTORIAL_KONTEXT, KONTEXT_DATALOADER) if name == "kontext" else (TUTORIAL_PIXART,
                                                                                     PIXART_DATALOADER)
    (tmp_path / "multidatabackend.json").write_text(json.dumps(loader))
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = _cli("config", "plan", "--config", str(tmp_path / "config.json"), "--home", str(tmp_path),
               "--budget-gb", "24", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["total_bytes"] == sum(plan["breakdown_bytes"].values())
    if name == "kontext":
        # 1024² target + one 1024² reference; LoKr on every block Linear of an int8 base; T5 and CLIP resident
        assert (plan["bucket"], plan["batch"]) == ("1024x1024+1 ref", 1)
        assert plan["params"]["transformer"] == 11_901_408_320
        assert 10 * 2**30 < plan["breakdown_bytes"]["base weights"] < 12 * 2**30
        assert plan["largest"] == "base weights"
    else:
        assert (plan["bucket"], plan["batch"]) == ("1024x1024", 2)
        assert plan["params"]["transformer"] == 908_433_824
        # fp32 master weights + gradients + two fp32 AdamW states = 16 bytes per parameter
        assert plan["breakdown_bytes"]["optimizer states"] == 8 * 908_433_824
    text = _cli("config", "plan", "--config", str(tmp_path / "config.json"), "--home", str(tmp_path),
                "--budget-gb", "8")
    assert "does not fit in 8 GiB; would help:" in text.stdout, text.stdout


def test_fit_warning_names_the_numbers_and_the_knobs() -> None:
    from simpletuner_core.jobs.devices import Device
    from simpletuner_core.memory import fit_warning

    cfg = _cfg(model_family="flux", model_flavour="dev", model_type="lora", gradient_checkpointing=False,
               train_batch_size=4, mixed_precision="auto")
    plan = plan_for(cfg, get_registry())
    warning = fit_warning(plan, [Device(0, "NVIDIA RTX 4090", 24.0)], cfg, get_registry(), None)
    assert warning and "does not fit GPU 0 (NVIDIA RTX 4090, 24 GiB)" in warning
    for knob in ("base_model_precision=int8-quanto", "gradient_checkpointing=true", "train_batch_size=1"):
        assert knob in warning
    assert fit_warning(plan, [Device(0, "big", 4096.0)], cfg, get_registry(), None) is None
    assert fit_warning(plan, [], cfg, get_registry(), None) is None


def test_gpu_bench_dry_run_builds_every_model_on_meta(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry-run", "--json",
                          str(tmp_path / "dry.json")], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["case"]: r for r in json.loads((tmp_path / "dry.json").read_text())["rows"]}
    assert rows["flux-lora"]["params"] == rows["kontext-int8"]["params"] == 11_901_408_320  # FLUX.1 [dev]
    assert rows["pixart-full"]["params"] == 610_856_096  # PixArt Σ XL/2
    assert "11,901,408,320" in out.stdout


@pytest.mark.gpu
def test_plan_within_15_percent_of_cuda_peak(tmp_path: Path) -> None:
    """The real-width cases on the GPU: the plan (less the encoders the bench does not load) against
    ``torch.cuda.max_memory_allocated`` over the measured steps."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--quick", "--no-tests", "--json",
                          str(tmp_path / "gpu.json")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for row in json.loads((tmp_path / "gpu.json").read_text())["rows"]:
        if not row["case"].endswith("hand"):
            assert abs(row["plan_error"]) <= 0.15, row
