"""The memory plan: peak accelerator memory of a config, estimated from numbers alone (no weights, no GPU, no
torch), broken down into weights, frozen components, adapter, gradients, optimizer states, EMA and activations.

Parameters, gradients and optimizer states are counted exactly from the family's layer list (a test compares
them with the real tensors of the tiny flavours). Activations are what autograd keeps for backward: per block,
the family's per-token saved tensors, plus the inputs that trainable, adapted or quanto-quantized Linears keep
(quanto keeps its input even when frozen); gradient checkpointing keeps only each checkpointed block's inputs and
recomputes one block at a time. The total adds every bucket, so it is a peak bound rather than a trace.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from simpletuner_core.memory.adapters import adapted, adapter_tensors, quantized
from simpletuner_core.memory.arch import Architecture

GiB = 2**30
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_QUANT = {"int8-quanto": 1.0, "fp8-quanto": 1.0, "int4-quanto": 0.5}
#: Optimizer state bytes per trainable element and extra bytes per trainable tensor (step counters).
OPTIMIZER_STATE = {"adamw": (8, 4), "optimi-adamw": (8, 0), "adamw_bf16": (8, 0), "optimi-lion": (4, 0),
                   "adamw8bit": (2, 8), "prodigy": (16, 4)}


@attrs.frozen
class Bucket:
    """A resolution bucket: pixel size and the tokens it makes (targets, plus Kontext references)."""

    width: int
    height: int
    references: int = 0

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}" + (f"+{self.references} ref" if self.references else "")


@attrs.frozen
class MemoryPlan:
    family: str
    flavour: str
    device: str
    breakdown: dict[str, int]
    bucket: Bucket
    batch: int
    notes: tuple[str, ...] = ()
    params: dict[str, int] = attrs.field(factory=dict)

    @property
    def total(self) -> int:
        return sum(self.breakdown.values())

    @property
    def largest(self) -> str:
        return max(self.breakdown, key=lambda k: self.breakdown[k])

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "flavour": self.flavour, "device": self.device,
                "total_bytes": self.total, "total_gib": round(self.total / GiB, 2),
                "breakdown_bytes": dict(self.breakdown), "largest": self.largest, "bucket": self.bucket.name,
                "batch": self.batch, "params": dict(self.params), "notes": list(self.notes)}

    def render(self) -> str:
        lines = [f"Memory plan: {self.family} {self.flavour}, bucket {self.bucket.name}, batch {self.batch} "
                 f"({self.device})"]
        for key, value in self.breakdown.items():
            lines.append(f"  {key:<22} {value / GiB:8.2f} GiB")
        lines.append(f"  {'total':<22} {self.total / GiB:8.2f} GiB   (largest: {self.largest})")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def weight_dtype(cfg: Any, device: str) -> str:
    """The dtype the engine loads frozen weights in: ``base_model_precision``, or under a quantizer the autocast
    dtype (bf16 on a GPU with ``mixed_precision=auto``)."""
    precision = cfg.base_model_precision
    if precision in ("bf16", "fp16", "fp32"):
        return precision
    if precision in _QUANT:
        return autocast(cfg, device) or "fp32"
    return "fp32"


def autocast(cfg: Any, device: str) -> str | None:
    mp = cfg.mixed_precision
    if mp == "auto":
        return "bf16" if device == "cuda" else None
    return None if mp == "no" else mp


def _tokens(arch: Architecture, bucket: Bucket, text: int) -> dict[str, int]:
    per_image = (bucket.width // arch.pixels_per_token) * (bucket.height // arch.pixels_per_token)
    image = per_image * (1 + bucket.references)
    return {"image": image, "target": per_image, "text": text, "joint": image + text, "sample": 1}


def estimate(cfg: Any, family: Any, arch: Architecture, bucket: Bucket, *, device: str = "cuda",
             adapter: dict[str, Any] | None = None) -> MemoryPlan:
    """The plan for ``cfg`` at ``bucket``; ``adapter`` is the engine's adapter description (``describe_adapter``)."""
    wdt = weight_dtype(cfg, device)
    amp = autocast(cfg, device)
    lora = cfg.model_type == "lora"
    quant = _QUANT.get(cfg.base_model_precision) if lora else None
    base_bytes = _BYTES[wdt] if lora else 4  # full fine-tunes keep fp32 master weights
    layers, algo, settings = adapted(arch, adapter if lora else None)
    adapted_names = {lin.name for lin in layers}
    weights = sum(arch.others.values()) * base_bytes
    quantized_names = set()
    for lin in arch.linears:
        if quant is not None and quantized(arch, lin):
            quantized_names.add(lin.name)
            n = lin.in_features * lin.out_features
            scales = lin.out_features if quant == 1.0 else 2 * math.ceil(n / 128)
            weights += math.ceil(n * quant) + scales * base_bytes + (lin.out_features * base_bytes if lin.bias else 0)
        else:
            weights += lin.numel * base_bytes
    comp_bytes = _BYTES[wdt]
    components = sum(c.params * comp_bytes + (c.fp32_under_fp16 * 2 if wdt == "fp16" else 0)
                     for c in arch.components)
    if lora:
        tensors = [t for lin in layers for t in adapter_tensors(lin, algo, settings)]
    else:
        tensors = [lin.in_features * lin.out_features for lin in arch.linears]
        tensors += [lin.out_features for lin in arch.linears if lin.bias] + list(arch.others.values())
    trainable, n_tensors = sum(tensors), len(tensors)
    per_elem, per_tensor = OPTIMIZER_STATE.get(cfg.optimizer, (8, 4))
    breakdown = {"base weights": weights if lora else 0, "frozen components": components,
                 "trainable weights": trainable * 4, "gradients": trainable * 4,
                 "optimizer states": trainable * per_elem + n_tensors * per_tensor,
                 "ema": trainable * 4 if cfg.use_ema else 0}
    if not lora:
        breakdown["base weights"] = 0  # the trainable weights are the model
    text = cfg.tokenizer_max_length or arch.text_tokens
    activations, notes = _activations(cfg, arch, bucket, text, amp, base_bytes if lora else 4, lora,
                                      adapted_names, quantized_names, settings)
    breakdown["activations"] = activations
    if lora and algo != "standard":
        notes.append(f"activations of LyCORIS {algo} are modelled like a LoRA's (not yet checked on a GPU)")
    notes.append("text encoders and the VAE stay on the device while training (counted in frozen components)")
    params = {"transformer": arch.params, "trainable": trainable,
              **{c.name: c.params for c in arch.components}}
    return MemoryPlan(family.name, getattr(cfg, "model_flavour", None) or family.default_flavour or "", device,
                      breakdown, bucket, cfg.train_batch_size, tuple(notes), params)


def _activations(cfg: Any, arch: Architecture, bucket: Bucket, text: int, amp: str | None, base_bytes: int,
                 lora: bool, adapted_names: set[str], quantized_names: set[str], settings: dict) -> tuple[int, list]:
    tokens = _tokens(arch, bucket, text)
    act = _BYTES[amp] if amp else base_bytes
    f32 = 4 if amp else act
    lora_bytes = act if amp else 4
    dropout = float(settings.get("dropout") or 0.0)
    rank = int(settings.get("linear_dim", 0) or 0)
    lycoris = "algo" in settings
    per_block = [0] * arch.blocks
    outside = 0
    for s in arch.saved:
        if s.when == "full" and lora:
            continue
        if s.when == "input" and lora and s.block == 0:
            continue
        size = tokens[s.stream] * s.width * (f32 if s.fp32 else act)
        if s.block is None:
            outside += size
        else:
            per_block[s.block] += size
    seen: set[tuple[Any, str]] = set()
    for lin in arch.linears:
        keeps = (not lora) or lin.name in adapted_names or lin.name in quantized_names
        if not keeps:
            continue
        size = tokens[lin.stream] * lin.in_features
        extra = 0
        if lora and lin.name in adapted_names and lycoris:
            # LyCORIS' bypass path (a quantized base) runs on a reshaped copy of the input and keeps an
            # output-wide intermediate per module
            extra = tokens[lin.stream] * (lin.in_features + lin.out_features) * lora_bytes
        elif lora and lin.name in adapted_names:
            extra = tokens[lin.stream] * rank * lora_bytes
            if dropout:
                extra += tokens[lin.stream] * lin.in_features * (lora_bytes + 1)
        key = ("shared" if lin.shared_input else lin.block, lin.group or lin.name)
        if key not in seen and not lin.free_input:
            seen.add(key)
            extra += size * (lora_bytes if lora and lin.name in adapted_names else act)
        if lin.block is None or lin.shared_input:
            outside += extra
        else:
            per_block[lin.block] += extra
    notes: list[str] = []
    if cfg.gradient_checkpointing:
        interval = max(1, cfg.gradient_checkpointing_interval or 1)
        kept = sum(tokens[stream] * width * act for stream, width in arch.block_inputs)
        total = outside + max(per_block, default=0)
        for i, full in enumerate(per_block):
            total += kept if i % interval == 0 else full
        notes.append(f"gradient checkpointing every {interval} block(s): one block is recomputed at a time")
    else:
        total = outside + sum(per_block)
    return total * cfg.train_batch_size, notes
