"""Reference (conditioning) images in the training loop: caches, per-batch selection, validation input.

The preflight pairs every target with its references (:mod:`simpletuner_core.data.pairing`); here the engine
encodes them into content-addressed latent caches like targets, and hands the family a list of reference latent
batches per micro-batch. ``conditioning_multidataset_sampling`` decides which: ``combined`` passes one batch per
conditioning dataset, ``random`` one dataset drawn per micro-batch from its seeded RNG (so resume is exact).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from simpletuner_core.config.errors import ConfigError, ConfigInvalid

FEATURE = "reference_conditioning"


def check_supported(plan: Any, family: Any, cfg: Any) -> None:
    """Refuse edit/reference pairs for a flavour that cannot use them, before any model loads."""
    if not plan.references:
        return
    flavour = family.flavours.get(cfg.model_flavour or family.default_flavour or "")
    if flavour is None or FEATURE not in flavour.features:
        able = [n for n, f in family.flavours.items() if FEATURE in f.features]
        hint = f"use model_flavour {' or '.join(able)}" if able else f"{family.name} has no such flavour"
        raise ConfigInvalid([ConfigError("data_backend_config", (
            f"the dataloader pairs images with conditioning datasets, but {family.name} flavour "
            f"{cfg.model_flavour or family.default_flavour!r} cannot train on reference images; {hint}, or "
            "remove conditioning_data"))])


def reference_index(plan: Any) -> dict[tuple[str, str], list[Any]]:
    """(target dataset id, target path) → its reference samples, in ``conditioning_data`` order."""
    index: dict[tuple[str, str], list[Any]] = {}
    for ref in plan.references:
        index.setdefault((ref.target_dataset_id, ref.target_path), []).append(ref.sample)
    return index


def fill_caches(plan: Any, datasets: list[Any], cfg: Any, home: Path, family: Any, registry: Any,
                log: Any) -> dict[str, Any]:
    """One latent cache per conditioning dataset, holding every paired reference."""
    from simpletuner_core.data.cache import LatentCache
    from simpletuner_core.training.data_setup import vae_cache_dir

    by_id = {d.id: d for d in datasets}
    caches: dict[str, Any] = {}
    for ds_id in sorted({r.sample.dataset_id for r in plan.references}):
        dataset = by_id[ds_id]
        backend = registry.data_backends.get(dataset.type)
        samples = list({r.sample: None for r in plan.references if r.sample.dataset_id == ds_id})
        cache = LatentCache(vae_cache_dir(cfg, dataset, home), family.encoder_id("vae"))
        stats = cache.ensure(samples, lambda s, b=backend, d=dataset: b.read_bytes(d, s.path), family.encode_images,
                             batch_size=max(1, cfg.train_batch_size * 2))
        log(f"latent cache {ds_id} (references): {stats.encoded} encoded, {stats.reused} reused")
        caches[ds_id] = cache
    return caches


def batch_references(targets: list[Any], index: dict[tuple[str, str], list[Any]], caches: dict[str, Any],
                     mode: str, rng: random.Random) -> list[Any] | None:
    """Reference latent batches for one micro-batch, or None when its targets have no references."""
    import torch

    per_target = [index.get((s.dataset_id, s.path)) for s in targets]
    if not per_target[0]:
        return None
    count = len(per_target[0])
    chosen = range(count) if mode == "combined" else [rng.randrange(count)]
    return [torch.stack([caches[refs[k].dataset_id].load(refs[k]) for refs in per_target]) for k in chosen]


def validation_inputs(plan: Any, datasets: list[Any], registry: Any) -> tuple[tuple[int, int] | None, list[Any]]:
    """The first sample's bucket and, when it has one, its first reference image (PIL) for edit validation."""
    from simpletuner_core.data.images import load_image

    if not plan.samples:
        return None, []
    first = plan.samples[0]
    refs = reference_index(plan).get((first.dataset_id, first.path)) or []
    images = []
    if refs:
        dataset = next(d for d in datasets if d.id == refs[0].dataset_id)
        data = registry.data_backends.get(dataset.type).read_bytes(dataset, refs[0].path)
        images.append(load_image(refs[0], data))
    return first.plan.target_size, images
