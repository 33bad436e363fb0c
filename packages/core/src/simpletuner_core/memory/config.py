"""A config → its memory plan: the family's shapes, the adapter the config describes, the largest resolution
bucket its dataloader can produce, and (when it does not fit) the knobs that would help. Torch-free, so the
server answers it in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from simpletuner_core.memory.plan import Bucket, GiB, MemoryPlan, estimate


class NoPlan(Exception):
    """Why a config has no memory plan (a family without shapes, an unknown flavour)."""


def _adapter(cfg: Any, arch: Any) -> dict[str, Any] | None:
    if cfg.model_type != "lora":
        return None
    from simpletuner_core.builtins.adapters import describe_lora, describe_lycoris

    describe = describe_lycoris if cfg.lora_type == "lycoris" else describe_lora
    return describe(cfg, list(arch.lora_targets), dict(arch.lycoris_presets))


def _edge(resolution: float, rtype: str, multiple: int) -> int:
    from simpletuner_core.data.buckets import round_to, target_edge

    return round_to(target_edge(resolution, rtype), multiple)


def buckets(cfg: Any, family: Any, home: Path | None) -> tuple[list[Bucket], str]:
    """Square-equivalent buckets of the config's image datasets (aspect buckets keep about the same area), with
    the number of reference images each Kontext sample carries; (buckets, where they came from)."""
    from simpletuner_core.data.buckets import resolve_resolution

    multiple = family.size_multiple
    default = [Bucket(*(2 * [_edge(cfg.resolution or 1024, cfg.resolution_type or "pixel_area", multiple)]))]
    value = cfg.data_backend_config
    if not value:
        return default, "the config's resolution (no dataloader)"
    try:
        from simpletuner_core.config import environments as envs
        from simpletuner_core.data.config import load_dataloader

        path = envs.resolve_dataloader_path(value, home=home, cwd=home) if home else Path(value)
        datasets = load_dataloader(path)
    except Exception:  # an unreadable dataloader is validate's to report; plan from the config's resolution
        return default, "the config's resolution (dataloader not readable)"
    by_id = {d.id: d for d in datasets}
    flavour = family.flavours.get(cfg.model_flavour or family.default_flavour)
    kontext = flavour is not None and "reference_conditioning" in flavour.features
    out = []
    for ds in datasets:
        if not ds.enabled_image:
            continue
        edge = _edge(*resolve_resolution(ds, cfg.resolution, cfg.resolution_type), multiple)
        refs = [by_id[r] for r in ds.conditioning_data if r in by_id] if kontext else []
        if refs and getattr(cfg, "conditioning_multidataset_sampling", "combined") != "combined":
            refs = refs[:1]
        out.append(Bucket(edge, edge, len(refs)))
    return (out or default), "the dataloader's resolutions"


def plan_for(cfg: Any, registry: Any, home: Path | None = None, device: str = "cuda") -> MemoryPlan:
    family = registry.family(cfg.model_family)
    if family.memory_shapes is None:
        raise NoPlan(f"model family {family.name} describes no shapes for a memory plan")
    flavour = cfg.model_flavour or family.default_flavour
    if flavour not in family.flavours:
        raise NoPlan(f"no memory plan for flavour {flavour!r}")
    arch = family.memory_shapes(flavour, cfg)
    found, source = buckets(cfg, family, home)
    largest = max(found, key=lambda b: b.width * b.height * (1 + b.references))
    plan = estimate(cfg, family, arch, largest, device=device, adapter=_adapter(cfg, arch))
    return attrs.evolve(plan, notes=(*plan.notes, f"bucket from {source}"))


def knobs(cfg: Any, registry: Any, home: Path | None, budget_bytes: int, device: str = "cuda") -> list[str]:
    """Single changes that shrink the plan, each with its new total; those that fit the budget first."""
    tries: list[tuple[str, dict[str, Any]]] = []
    if cfg.model_type == "lora" and cfg.base_model_precision not in ("int8-quanto", "int4-quanto"):
        tries.append(("base_model_precision=int8-quanto", {"base_model_precision": "int8-quanto"}))
    if cfg.model_type == "lora" and cfg.base_model_precision == "int8-quanto":
        tries.append(("base_model_precision=int4-quanto", {"base_model_precision": "int4-quanto"}))
    if not cfg.gradient_checkpointing or (cfg.gradient_checkpointing_interval or 1) > 1:
        tries.append(("gradient_checkpointing=true", {"gradient_checkpointing": True,
                                                      "gradient_checkpointing_interval": None}))
    if cfg.train_batch_size > 1:
        tries.append(("train_batch_size=1 (raise gradient_accumulation_steps)", {"train_batch_size": 1}))
    if cfg.model_type == "full":
        tries.append(("model_type=lora", {"model_type": "lora"}))
    if cfg.optimizer not in ("optimi-lion", "adamw8bit"):
        tries.append(("optimizer=optimi-lion", {"optimizer": "optimi-lion"}))
    out = []
    for label, change in tries:
        try:
            total = plan_for(attrs.evolve(cfg, **change), registry, home, device).total
        except (NoPlan, ValueError):
            continue
        out.append((total > budget_bytes, total, f"{label}: {total / GiB:.1f} GiB"))
    base = plan_for(cfg, registry, home, device)
    smaller = Bucket(max(256, base.bucket.width // 2 // 16 * 16), max(256, base.bucket.height // 2 // 16 * 16),
                     base.bucket.references)
    if smaller.width < base.bucket.width:
        family = registry.family(cfg.model_family)
        arch = family.memory_shapes(cfg.model_flavour or family.default_flavour, cfg)
        total = estimate(cfg, family, arch, smaller, device=device, adapter=_adapter(cfg, arch)).total
        out.append((total > budget_bytes, total, f"resolution {smaller.width}px: {total / GiB:.1f} GiB"))
    return [text for _, _, text in sorted(out)]


def fit_warning(plan: MemoryPlan, devices: list[Any], cfg: Any, registry: Any, home: Path | None) -> str | None:
    """A warning when the plan exceeds the largest visible GPU (None when it fits, or no GPU is visible)."""
    if not devices:
        return None
    best = max(devices, key=lambda d: d.memory_gb)
    budget = int(best.memory_gb * GiB)
    if plan.total <= budget:
        return None
    helps = knobs(cfg, registry, home, budget)
    return (f"memory plan: about {plan.total / GiB:.1f} GiB at {plan.bucket.name}, batch {plan.batch} "
            f"(largest: {plan.largest}, {plan.breakdown[plan.largest] / GiB:.1f} GiB) does not fit GPU "
            f"{best.index} ({best.name}, {best.memory_gb:g} GiB); would help: " + "; ".join(helps[:4]))
