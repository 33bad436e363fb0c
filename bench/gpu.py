#!/usr/bin/env python
"""Real-width training on one CUDA GPU: random-init diffusers models at the published configs, cached-feature
tensors of the right shapes, our step against a hand-written one, peak memory against the memory plan.

Cases (Flux.1-dev-shaped transformer: 19 + 38 blocks, 3072 wide; PixArt Σ 600M-shaped: 28 blocks, 1152 wide):

* ``flux-lora``       LoRA r16 (``all``), 1024², batch 1, bf16 base, bf16 autocast, gradient checkpointing
* ``flux-lora-hand``  the same step written by hand (peft + torch AdamW + autocast), for the ours/hand ratio
* ``flux-lora-int8``  the same on an int8-quanto base
* ``kontext-int8``    Kontext: one 1024² reference latent appended to the sequence, int8-quanto base
* ``pixart-full``     full fine-tune, 1024², batch 16, bf16 autocast, fp32 master weights, checkpointing

"ours" runs the engine's parts: the registry's quantizer, adapter and optimizer, the family trainer's loss,
accelerate's autocast and backward, gradient clipping. Encoders are not loaded (features are cached), so the
plan's ``frozen components`` are left out of the comparison. MFU = 4 × transformer params × tokens per sample
(LoRA: forward + input-gradient backward; 6 × for a full fine-tune) / (step seconds × peak dense bf16 FLOP/s).

    python bench/gpu.py --dry-run        # CPU: build every model on the meta device, print the plan (< 1 min)
    python bench/gpu.py --quick          # GPU: fewer steps (about 3 minutes)
    python bench/gpu.py                  # GPU: the full run, then the gpu-marked tests (pytest -m gpu)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _pkg in ("core", "model-pixart", "model-flux"):
    sys.path.insert(0, str(ROOT / "packages" / _pkg / "src"))

#: Peak dense bf16 TFLOP/s by device name fragment (vendor datasheets); --peak-tflops overrides.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0, "A6000": 155.0}
PIXART_EXTRA = {"sample_size": 128, "norm_type": "ada_norm_single", "attention_bias": True,
                "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000, "norm_elementwise_affine": False,
                "norm_eps": 1e-6}
CASES = ("flux-lora", "flux-lora-hand", "flux-lora-int8", "kontext-int8", "pixart-full")


def case_config(case: str) -> dict[str, Any]:
    flux = {"model_family": "flux", "model_flavour": "kontext" if case.startswith("kontext") else "dev",
            "model_type": "lora", "lora_rank": 16, "train_batch_size": 1, "optimizer": "adamw",
            "base_model_precision": "int8-quanto" if case.endswith("int8") else "bf16", "lora_dropout": 0.0}
    pixart = {"model_family": "pixart_sigma", "model_flavour": "600M-1024", "model_type": "full",
              "train_batch_size": 16, "optimizer": "adamw"}
    base = pixart if case.startswith("pixart") else flux
    return {**base, "gradient_checkpointing": True, "mixed_precision": "bf16", "max_train_steps": 1,
            "output_dir": "/tmp/bench-gpu", "data_backend_config": "/nonexistent.json", "max_grad_norm": 1.0}


def build_model(case: str, device: str) -> Any:
    import torch
    from diffusers import FluxTransformer2DModel, PixArtTransformer2DModel

    from simpletuner_flux.shapes import DEV
    from simpletuner_pixart.shapes import SIGMA_600M

    with torch.device(device):
        if case.startswith("pixart"):
            return PixArtTransformer2DModel(**SIGMA_600M, **PIXART_EXTRA)
        return FluxTransformer2DModel(**DEV)


def plan_of(case: str, cfg: Any) -> Any:
    from simpletuner_core.memory import Bucket, estimate
    from simpletuner_core.memory.config import _adapter
    from simpletuner_core.plugins import get_registry

    family = get_registry().family(cfg.model_family)
    arch = family.memory_shapes(cfg.model_flavour, cfg)
    bucket = Bucket(1024, 1024, 1 if case.startswith("kontext") else 0)
    return estimate(cfg, family, arch, bucket, device="cuda", adapter=_adapter(cfg, arch))


def features(case: str, cfg: Any, torch: Any, device: str) -> dict[str, Any]:
    """Cached latents and text features with the shapes the real encoders give at 1024²."""
    b = cfg.train_batch_size
    if case.startswith("pixart"):
        return {"latents": torch.randn(b, 4, 128, 128, device=device),
                "text": {"prompt_embeds": torch.randn(b, 300, 4096, device=device),
                         "prompt_attention_mask": torch.ones(b, 300, device=device, dtype=torch.long)}}
    out = {"latents": torch.randn(b, 16, 128, 128, device=device),
           "text": {"prompt_embeds": torch.randn(b, 512, 4096, device=device),
                    "pooled_prompt_embeds": torch.randn(b, 768, device=device)}}
    if case.startswith("kontext"):
        out["conditioning"] = [torch.randn(b, 16, 128, 128, device=device)]
    return out


def family_trainer(cfg: Any, torch: Any, device: Any) -> Any:
    """The family's trainer class with the fields its ``loss`` reads, without loading any weights."""
    from simpletuner_core.plugins import get_registry

    family = get_registry().family(cfg.model_family)
    cls = family.trainer()
    trainer = cls.__new__(cls)
    trainer.cfg, trainer.family, trainer.device = cfg, family, device
    if cfg.model_family == "flux":
        trainer.kontext, trainer.guidance, trainer.tread_spans = cfg.model_flavour == "kontext", True, []
    else:
        from diffusers import DDPMScheduler

        trainer.noise_scheduler = DDPMScheduler()
        trainer.prediction_type = "epsilon"
        trainer.alphas = trainer.noise_scheduler.alphas_cumprod.to(device)
    return trainer


def run_ours(case: str, cfg: Any, steps: int, warmup: int) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator

    from simpletuner_core.plugins import get_registry
    from simpletuner_core.training import grad_checkpointing

    reg = get_registry()
    accelerator = Accelerator(mixed_precision="bf16")
    device = accelerator.device
    torch.manual_seed(0)
    model = build_model(case, "cuda")
    arch = reg.family(cfg.model_family).memory_shapes(cfg.model_flavour, cfg)
    if cfg.model_type == "lora":
        model.to(torch.bfloat16)
        if cfg.base_model_precision in reg.quantizers:
            reg.quantizers.get(cfg.base_model_precision).quantize(model, cfg, exclude=list(arch.quantize_exclude))
        handle = reg.adapters.get(cfg.lora_type).apply(model, cfg, list(arch.lora_targets), {})
        params = handle.params
    else:
        model.requires_grad_(True)
        params = list(model.parameters())
    grad_checkpointing.enable(model, None)
    model.train()
    optimizer = reg.optimizers.get(cfg.optimizer).factory(params, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    trainer = family_trainer(cfg, torch, device)
    batch = features(case, cfg, torch, "cuda")
    kwargs = {"conditioning": batch["conditioning"]} if "conditioning" in batch else {}
    return timed(lambda: _step(accelerator, model, optimizer, trainer, batch, kwargs, params), steps, warmup)


def _step(accelerator: Any, model: Any, optimizer: Any, trainer: Any, batch: Any, kwargs: Any, params: Any) -> None:
    with accelerator.autocast():
        loss = trainer.loss(model, batch["latents"], batch["text"], **kwargs)
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_hand(cfg: Any, steps: int, warmup: int) -> dict[str, Any]:
    """The Flux LoRA step as a user would write it: peft, torch AdamW, autocast, packed latents, MSE."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    model = build_model("flux-lora", "cuda").to(torch.bfloat16).requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=16, lora_alpha=16, target_modules=[
        "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]), model)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    lat = torch.randn(1, 16, 128, 128, device="cuda")
    text, pooled = torch.randn(1, 512, 4096, device="cuda"), torch.randn(1, 768, device="cuda")
    ids = torch.zeros(64, 64, 3, device="cuda")
    ids[..., 1], ids[..., 2] = torch.arange(64, device="cuda")[:, None], torch.arange(64, device="cuda")[None, :]
    ids = ids.reshape(-1, 3)

    def step() -> None:
        noise = torch.randn_like(lat)
        s = torch.sigmoid(torch.randn(1, device="cuda")).view(1, 1, 1, 1)
        x = ((1 - s) * lat + s * noise).view(1, 16, 64, 2, 64, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, 4096, 64)
        target = (noise - lat).view(1, 16, 64, 2, 64, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, 4096, 64)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = model(hidden_states=x, timestep=s.flatten(), guidance=torch.ones(1, device="cuda"),
                         pooled_projections=pooled, encoder_hidden_states=text,
                         txt_ids=torch.zeros(512, 3, device="cuda"), img_ids=ids, return_dict=False)[0]
        F.mse_loss(pred.float(), target).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(step, steps, warmup)


def timed(step: Any, steps: int, warmup: int) -> dict[str, Any]:
    import torch

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return {"seconds_per_step": statistics.median(times), "peak_bytes": torch.cuda.max_memory_allocated()}


def tokens(case: str) -> int:
    return 4096 if case.startswith("pixart") else 4096 * (2 if case.startswith("kontext") else 1) + 512


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="meta-device builds and plans only (CPU)")
    ap.add_argument("--quick", action="store_true", help="fewer steps, no gpu-marked tests")
    ap.add_argument("--json", default="bench-gpu.json", help="where to write the results")
    ap.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of this GPU (for MFU)")
    ap.add_argument("--no-tests", action="store_true", help="skip the gpu-marked pytest run")
    args = ap.parse_args()
    import torch

    from simpletuner_core.config import validate
    from simpletuner_core.plugins import get_registry

    rows = []
    for case in CASES:
        cfg = validate(case_config(case), get_registry())
        model = build_model(case, "meta")
        params = sum(p.numel() for p in model.parameters())
        del model
        plan = plan_of(case, cfg)
        row = {"case": case, "params": params, "plan_bytes": plan.total - plan.breakdown["frozen components"],
               "plan_largest": plan.largest, "tokens_per_sample": tokens(case), "batch": cfg.train_batch_size}
        rows.append((case, cfg, row))
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "rows": []}
    if not args.dry_run:
        if not torch.cuda.is_available():
            print("no CUDA GPU: use --dry-run on a CPU machine", file=sys.stderr)
            return 2
        name = torch.cuda.get_device_name(0)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), 989.0)
        results.update(device=name, peak_tflops=peak)
        steps, warmup = (3, 1) if args.quick else (10, 3)
        for case, cfg, row in rows:
            torch.cuda.empty_cache()
            measured = run_hand(cfg, steps, warmup) if case.endswith("hand") else run_ours(case, cfg, steps, warmup)
            factor = 6 if cfg.model_type == "full" else 4
            flops = factor * row["params"] * row["tokens_per_sample"] * row["batch"]
            row.update(measured, mfu=flops / (measured["seconds_per_step"] * peak * 1e12),
                       mfu_formula=f"{factor} x params x tokens x batch / (s/step x {peak:g} TFLOP/s)",
                       plan_error=row["plan_bytes"] / measured["peak_bytes"] - 1)
            torch.cuda.empty_cache()
    for _, _, row in rows:
        results["rows"].append(row)
    print(f"{'case':<16} {'params':>15} {'plan GiB':>9} {'it/s':>7} {'img/s':>7} {'peak GiB':>9} {'plan err':>9} "
          f"{'MFU':>6}")
    for row in results["rows"]:
        s = row.get("seconds_per_step")
        line = f"{row['case']:<16} {row['params']:>15,} {row['plan_bytes'] / 2**30:>9.2f}"
        if s:
            line += (f" {1 / s:>7.2f} {row['batch'] / s:>7.2f} {row['peak_bytes'] / 2**30:>9.2f} "
                     f"{row['plan_error']:>+8.0%} {row['mfu']:>6.1%}")
        print(line)
    by_case = {row["case"]: row for row in results["rows"]}
    if "seconds_per_step" in by_case["flux-lora"]:
        ratio = by_case["flux-lora"]["seconds_per_step"] / by_case["flux-lora-hand"]["seconds_per_step"]
        results["ours_over_hand"] = ratio
        print(f"flux-lora ours/hand s/step: {ratio:.3f}; MFU formula: {by_case['flux-lora']['mfu_formula']}")
    Path(args.json).write_text(json.dumps(results, indent=2))
    if args.dry_run or args.quick or args.no_tests:
        return 0
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu"]
    return subprocess.call(tests, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
