"""Edit/reference pairing: match each target image with its reference in every ``conditioning_data`` dataset.

Pairs are matched by file name (the path relative to the dataset root, extension ignored), so ``edit/cat.png``
pairs with ``reference/cat.jpg``. ``reference_strict`` references get exactly the target's resize and crop (same
pixels under the same crop box), so they must have the target's aspect ratio; ``reference_loose`` references are
planned on their own (own aspect, the conditioning dataset's resolution and crop settings). Torch-free, like the rest
of the preflight.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import attrs

from simpletuner_core.config.errors import ConfigError
from simpletuner_core.data.buckets import ImagePlan, bucket_name, plan_image
from simpletuner_core.data.config import DatasetConfig, resolve_data_dir

#: Relative difference in aspect ratio tolerated between a strict reference and its target (rounding in exports).
ASPECT_TOLERANCE = 0.01
_EXAMPLES = 3


@attrs.frozen
class Reference:
    """The reference image of one target sample from one conditioning dataset."""

    target_dataset_id: str
    target_path: str
    #: The reference as a sample of its conditioning dataset (its plan drives loading and the latent cache).
    sample: Any


@attrs.define
class PairingSummary:
    """What pairing found for one (image dataset, conditioning dataset) link; shown in the plan."""

    dataset_id: str
    conditioning_id: str
    conditioning_type: str
    paired: int
    unpaired: list[str]
    extra: list[str]
    mismatched: list[str]


def pair_key(path: str, root: str) -> str:
    rel = os.path.relpath(path, root) if root and os.path.isabs(path) else path
    return os.path.splitext(os.path.normpath(rel))[0]


def _strict_plan(target: ImagePlan) -> ImagePlan:
    """The target's resize and crop, applied to a same-aspect image of any size (with the target's downsample
    step, so the reference gets exactly the target's pixels; only the target's own warnings are dropped)."""
    return attrs.evolve(target, warnings=())


def _aspect_mismatch(a: tuple[int, int], b: tuple[int, int]) -> bool:
    ra, rb = a[0] / a[1], b[0] / b[1]
    return abs(ra - rb) / ra > ASPECT_TOLERANCE


def pair_references(plan: Any, datasets: list[DatasetConfig], references: dict[str, tuple[Any, list[str]]],
                    *, base_dir: str, seed: int, size_multiple: int, read_size: Any,
                    plan_kw: Mapping[str, Any]) -> None:
    """Pair every sample of an image dataset with ``conditioning_data``; unpaired targets are filtered.

    ``references`` maps a conditioning dataset id to ``(backend, image paths)``; ``read_size(backend, ds, path)``
    reads an image's size; ``plan_kw`` are the training config's fallbacks as :func:`plan_image` keywords. Fills ``plan.references`` and ``plan.pairings``; adds warnings for extra references.
    """
    from simpletuner_core.data.preflight import Filtered, Sample  # circular at import time

    by_id = {ds.id: ds for ds in datasets}
    kept: list[Any] = []
    dropped: set[tuple[str, str]] = set()
    for ds in datasets:
        if not ds.enabled_image or not ds.conditioning_data:
            continue
        mine = [s for s in plan.samples if s.dataset_id == ds.id]
        target_root = resolve_data_dir(ds, base_dir)
        for cond_id in ds.conditioning_data:
            cond = by_id[cond_id]
            if cond.disabled or cond_id not in references:
                continue
            backend, paths = references[cond_id]
            cond_root = resolve_data_dir(cond, base_dir)
            by_key: dict[str, list[str]] = defaultdict(list)
            for p in paths:
                by_key[pair_key(p, cond_root)].append(p)
            available = {k: found[0] for k, found in by_key.items()}
            used: set[str] = set()
            summary = PairingSummary(ds.id, cond_id, cond.conditioning_type or "reference_strict", 0, [], [], [])
            for s in mine:
                key = pair_key(s.path, target_root)
                ref_path = available.get(key)
                if ref_path is None:
                    summary.unpaired.append(key)
                    dropped.add((s.dataset_id, s.path))
                    plan.filtered.append(Filtered(s.dataset_id, s.path, f"no reference image: {key}.* missing "
                                                  f"from conditioning dataset {cond_id!r}"))
                    continue
                used.add(key)
                if len(by_key[key]) > 1:  # cat.png and cat.jpg: picking one silently could train the wrong pair
                    names = ", ".join(sorted(os.path.basename(p) for p in by_key[key]))
                    summary.mismatched.append(f"{key} (several references: {names})")
                    dropped.add((s.dataset_id, s.path))
                    plan.filtered.append(Filtered(s.dataset_id, s.path, (
                        f"several reference images named {key}.* in {cond_id!r} ({names}); keep one")))
                    continue
                try:
                    size = read_size(backend, cond, ref_path)
                except Exception as exc:  # PIL raises many types for corrupt files
                    summary.mismatched.append(f"{key} (unreadable reference: {exc})")
                    dropped.add((s.dataset_id, s.path))
                    plan.filtered.append(Filtered(s.dataset_id, s.path, f"unreadable reference in {cond_id!r}"))
                    continue
                if summary.conditioning_type == "reference_strict":
                    if _aspect_mismatch(size, s.original_size):
                        summary.mismatched.append(f"{key} (target {bucket_name(s.original_size)}, reference "
                                                  f"{bucket_name(size)})")
                        dropped.add((s.dataset_id, s.path))
                        plan.filtered.append(Filtered(s.dataset_id, s.path, (
                            f"reference aspect differs from the target ({cond_id!r} is reference_strict): "
                            f"{bucket_name(s.original_size)} vs {bucket_name(size)}")))
                        continue
                    ref_plan: ImagePlan | str = _strict_plan(s.plan)
                else:
                    ref_plan = plan_image(size, cond, size_multiple=size_multiple, seed=seed,
                                          key=f"{cond_id}/{key}", **plan_kw)
                if isinstance(ref_plan, str):
                    summary.mismatched.append(f"{key} ({ref_plan})")
                    dropped.add((s.dataset_id, s.path))
                    plan.filtered.append(Filtered(s.dataset_id, s.path, f"reference filtered: {ref_plan}"))
                    continue
                summary.paired += 1
                kept.append(Reference(s.dataset_id, s.path, Sample(cond_id, ref_path, "", size, ref_plan, 0)))
            summary.extra.extend(sorted(set(available) - used))
            plan.pairings.append(summary)
    plan.samples = [s for s in plan.samples if (s.dataset_id, s.path) not in dropped]
    plan.references = [r for r in kept if (r.target_dataset_id, r.target_path) not in dropped]
    for p in plan.pairings:
        if p.extra:
            plan.warnings.append(f"conditioning dataset {p.conditioning_id!r}: {len(p.extra)} reference(s) have no "
                                 f"target in {p.dataset_id!r}, e.g. {', '.join(p.extra[:_EXAMPLES])}")
        if p.unpaired or p.mismatched:
            plan.warnings.append(f"dataset {p.dataset_id!r}: {len(p.unpaired)} target(s) without a reference and "
                                 f"{len(p.mismatched)} mismatched pair(s) in {p.conditioning_id!r} were filtered")


def check_collatable(plan: Any, by_id: dict[str, DatasetConfig], train_batch_size: int) -> None:
    """A micro-batch stacks its references per conditioning dataset: their sizes must agree within each
    (dataset, bucket) group, or collate would crash mid-run. Reported as a plan error with the knobs."""
    if train_batch_size < 2 or not plan.references:
        return
    sizes: dict[tuple[str, tuple[int, int], str], set[tuple[int, int]]] = defaultdict(set)
    target_size = {(s.dataset_id, s.path): s.plan.target_size for s in plan.samples}
    for ref in plan.references:
        bucket = target_size.get((ref.target_dataset_id, ref.target_path))
        if bucket is not None:
            sizes[(ref.target_dataset_id, bucket, ref.sample.dataset_id)].add(ref.sample.plan.target_size)
    for (ds_id, bucket, cond_id), found in sorted(sizes.items()):
        if len(found) > 1:
            shown = ", ".join(bucket_name(s) for s in sorted(found))
            plan.errors.append(ConfigError("train_batch_size", (
                f"targets in bucket {bucket_name(bucket)} of dataset {ds_id!r} have references of different "
                f"sizes in {cond_id!r} ({shown}); a batch could not stack them. Use train_batch_size 1, "
                f"conditioning_type reference_strict, or crop the references to one aspect (crop: true, "
                "crop_aspect: square)")))


def render_pairings(plan: Any) -> list[str]:
    lines = []
    for p in plan.pairings:
        lines.append(f"  {p.dataset_id} ← {p.conditioning_id} ({p.conditioning_type}): {p.paired} paired, "
                     f"{len(p.unpaired)} unpaired, {len(p.extra)} extra, {len(p.mismatched)} mismatched")
        for label, items in (("unpaired", p.unpaired), ("extra", p.extra), ("mismatched", p.mismatched)):
            if items:
                more = f" … and {len(items) - _EXAMPLES} more" if len(items) > _EXAMPLES else ""
                lines.append(f"      {label}: {', '.join(items[:_EXAMPLES])}{more}")
    return lines
