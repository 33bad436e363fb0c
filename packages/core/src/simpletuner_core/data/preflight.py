"""Preflight: find, caption, size and bucket every image before any model loads.

A training run that cannot form a single batch should fail in a second with the knob to turn, not after the model
downloaded. This module is torch-free on purpose (a subprocess test guards it); PIL only reads image headers.
"""

from __future__ import annotations

import io
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from simpletuner_core.config.errors import ConfigError
from simpletuner_core.data.buckets import (
    DEFAULT_ASPECT_ROUNDING,
    ImagePlan,
    Size,
    bucket_name,
    micro_batches,
    plan_image,
    resolution_problem,
    resolve_resolution,
    size_unit_problem,
)
from simpletuner_core.data.config import DatasetConfig, resolve_data_dir
from simpletuner_core.data.inert import inert_key_warnings

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
_EXIF_ORIENTATION = 0x0112
_EXAMPLES = 5


@attrs.frozen(cache_hash=True)
class Sample:
    """One usable image (repeats are applied by the sampler, not here)."""

    dataset_id: str
    path: str
    caption: str
    original_size: Size
    plan: ImagePlan
    index_in_dataset: int

    @property
    def bucket(self) -> str:
        return self.plan.bucket


@attrs.frozen
class Filtered:
    dataset_id: str
    path: str
    reason: str


@attrs.frozen
class DatasetSummary:
    id: str
    dataset_type: str
    found: int
    usable: int
    filtered: int
    repeats: int
    probability: float


@attrs.define
class Plan:
    """What will train, what was left out and why, and whether training can start at all."""

    samples: list[Sample] = attrs.field(factory=list)
    filtered: list[Filtered] = attrs.field(factory=list)
    #: ``"WxH"`` → samples per epoch in that bucket, repeats included (before ``probability`` thins them).
    buckets: dict[str, int] = attrs.field(factory=dict)
    #: Micro-batches each process gets per epoch: what the sampler yields (probability and repeats applied).
    micro_batches_per_epoch: int = 0
    datasets: list[DatasetSummary] = attrs.field(factory=list)
    errors: list[ConfigError] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    #: Edit/reference pairs (:class:`~simpletuner_core.data.pairing.Reference`), one per target and
    #: conditioning dataset; empty when no dataset has ``conditioning_data``.
    references: list[Any] = attrs.field(factory=list)
    pairings: list[Any] = attrs.field(factory=list)
    #: Samples of ``dataset_type: eval`` datasets: never trained on, cached like the rest, scored by the eval loss.
    eval_samples: list[Sample] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "samples": [attrs.asdict(s) for s in self.samples],
            "filtered": [attrs.asdict(f) for f in self.filtered],
            "buckets": dict(self.buckets),
            "micro_batches_per_epoch": self.micro_batches_per_epoch,
            "datasets": [attrs.asdict(d) for d in self.datasets],
            "errors": [e.to_dict() for e in self.errors],
            "warnings": list(self.warnings),
            "references": [{"target_dataset_id": r.target_dataset_id, "target_path": r.target_path,
                            "reference": attrs.asdict(r.sample)} for r in self.references],
            "pairings": [attrs.asdict(p) for p in self.pairings],
            "eval_samples": [attrs.asdict(s) for s in self.eval_samples],
        }

    def render(self) -> str:
        lines = ["Datasets:"]
        for d in self.datasets:
            if d.dataset_type == "text_embeds":
                lines.append(f"  {d.id} (text_embeds): caches caption embeddings")
                continue
            extra = {"image": "", "eval": " (held out for the eval loss)"}.get(d.dataset_type, " (reference images)")
            lines.append(
                f"  {d.id} ({d.dataset_type}): {d.found} images found, {d.usable} usable, {d.filtered} filtered, "
                f"repeats {d.repeats}, probability {d.probability:g}{extra}"
            )
        total = sum(self.buckets.values())
        thinned = any(0 < d.probability < 1 for d in self.datasets if d.dataset_type == "image")
        lines.append(f"Buckets ({total} samples per epoch, repeats included{', before probability' * thinned}):")
        lines.extend(f"  {name}: {count}" for name, count in self.buckets.items())
        if not self.buckets:
            lines.append("  (none)")
        lines.append(f"Micro-batches per epoch: {self.micro_batches_per_epoch} per process")
        if self.pairings:
            from simpletuner_core.data.pairing import render_pairings

            lines.append("Edit/reference pairs:")
            lines.extend(render_pairings(self))
        if self.filtered:
            lines.append(f"Filtered ({len(self.filtered)}):")
            groups: dict[str, list[str]] = defaultdict(list)
            for f in self.filtered:
                head, _, detail = f.reason.partition(": ")
                groups[head].append(f"{f.path} ({detail})" if detail else f.path)
            for head, examples in sorted(groups.items(), key=lambda kv: -len(kv[1])):
                lines.append(f"  {len(examples)} × {head}")
                lines.extend(f"      {example}" for example in examples[:_EXAMPLES])
                if len(examples) > _EXAMPLES:
                    lines.append(f"      … and {len(examples) - _EXAMPLES} more")
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"  {w}" for w in self.warnings)
        if self.errors:
            lines.append("Errors:")
            lines.extend(f"  {e}" for e in self.errors)
        else:
            lines.append("OK: training can start.")
        return "\n".join(lines)


def read_image_size(data: bytes) -> Size:
    """Display size from the header: EXIF orientations 5-8 (rotated 90°) swap width and height."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _why_unreadable(exc: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):  # its message embeds a BytesIO repr: useless and unstable
        return "not a recognised image format"
    return str(exc) or type(exc).__name__


def is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _text_reader(backend: Any, dataset: DatasetConfig, files: list[str]) -> Callable[[str], str | None]:
    """``read_text`` for caption strategies: only files the backend listed, so a missing caption costs no I/O."""
    listed = {os.path.normpath(f): f for f in files}

    def read_text(path: str) -> str | None:
        real = listed.get(os.path.normpath(path))
        if real is None:
            return None
        try:
            return backend.read_bytes(dataset, real).decode("utf-8", errors="replace")
        except OSError:
            return None

    return read_text


class _Builder:
    def __init__(self, base_dir: Path, seed: int, size_multiple: int, plan_kw: dict[str, Any], registry: Any) -> None:
        self.base_dir = Path(base_dir)
        self.seed = seed
        self.size_multiple = size_multiple
        #: The training config's fallbacks and bucketing settings, as :func:`plan_image` keywords.
        self.plan_kw = plan_kw
        self.defaults = (plan_kw["default_resolution"], plan_kw["default_resolution_type"])
        self.registry = registry
        self.plan = Plan()
        self.found: dict[str, int] = {}

    def discover(self, i: int, ds: DatasetConfig) -> tuple[Any, list[str]] | None:
        try:
            backend = self.registry.data_backends.get(ds.type)
        except LookupError as exc:
            self.plan.errors.append(ConfigError(f"[{i}].type", str(exc)))
            return None
        try:
            files = list(backend.list_files(ds, self.base_dir))
        except (FileNotFoundError, NotADirectoryError) as exc:
            self.plan.errors.append(ConfigError(f"[{i}].instance_data_dir", f"dataset {ds.id!r}: {exc}"))
            return None
        except OSError as exc:
            self.plan.errors.append(ConfigError(f"[{i}].instance_data_dir", f"cannot list dataset {ds.id!r}: {exc}"))
            return None
        return backend, files

    def image_dataset(self, i: int, ds: DatasetConfig, backend: Any, files: list[str]) -> None:
        images = [f for f in files if is_image(f)]
        self.found[ds.id] = len(images)
        res, rtype = resolve_resolution(ds, *self.defaults)
        problem = resolution_problem(res, rtype, self.size_multiple)
        if problem:
            self.plan.errors.append(ConfigError(f"[{i}].resolution", f"dataset {ds.id!r}: {problem}"))
            return
        lowest = self.plan_kw["default_minimum_image_size"]
        unit = size_unit_problem(lowest, rtype) if ds.minimum_image_size is None and lowest else None
        if unit:  # the config-wide minimum is read in each dataset's unit; a mixed-unit dataloader trips here
            self.plan.errors.append(ConfigError("minimum_image_size", (
                f"dataset {ds.id!r} sets no minimum_image_size of its own, so the config's applies: {unit}; set "
                f"minimum_image_size on the dataset (0 = none) or change the config's")))
            return
        try:
            strategy = self.registry.caption_strategies.get(ds.caption_strategy)
        except LookupError as exc:
            self.plan.errors.append(ConfigError(f"[{i}].caption_strategy", str(exc)))
            return
        read_text = _text_reader(backend, ds, files)
        root = resolve_data_dir(ds, self.base_dir)
        upscaled: list[str] = []
        for index, path in enumerate(images):
            reason, sample = self._one(ds, backend, strategy, read_text, root, index, path)
            if sample is None:
                self.plan.filtered.append(Filtered(ds.id, path, reason))
                continue
            self.plan.samples.append(sample)
            if sample.plan.warnings:
                upscaled.append(f"{os.path.basename(path)}: {sample.plan.warnings[0]}")
        if upscaled:
            self.plan.warnings.append(
                f"dataset {ds.id!r}: {len(upscaled)} image(s) smaller than the target were upscaled "
                f"(set minimum_image_size to filter them), e.g. {upscaled[0]}"
            )

    def _one(self, ds: DatasetConfig, backend: Any, strategy: Any, read_text: Callable[[str], str | None],
             root: str, index: int, path: str) -> tuple[str, Sample | None]:
        try:
            caption = strategy.caption(ds, path, read_text)
        except Exception as exc:  # a plugin strategy failing on one file filters that file, with the reason
            return f"caption_strategy {ds.caption_strategy!r} failed: {exc}", None
        if not caption:
            hint = f"{Path(path).stem}.txt missing or empty" if ds.caption_strategy == "textfile" else "empty"
            return f"no caption (caption_strategy {ds.caption_strategy!r}): {hint}", None
        try:
            size = read_image_size(backend.read_bytes(ds, path))
        except Exception as exc:  # PIL raises many types for corrupt files
            return f"unreadable image: {_why_unreadable(exc)}", None
        rel = os.path.relpath(path, root) if root and os.path.isabs(path) else path
        result = plan_image(size, ds, size_multiple=self.size_multiple, seed=self.seed,
                            key=f"{ds.id}/{rel}", **self.plan_kw)
        if isinstance(result, str):
            return result, None
        return "", Sample(ds.id, path, caption, size, result, index)


def build_plan(
    datasets: list[DatasetConfig],
    *,
    base_dir: Path,
    train_batch_size: int,
    gradient_accumulation_steps: int = 1,
    processes: int = 1,
    seed: int = 0,
    size_multiple: int = 16,
    default_resolution: float | None = None,
    default_resolution_type: str | None = None,
    minimum_image_size: float | None = None,
    aspect_bucket_rounding: int | None = DEFAULT_ASPECT_ROUNDING,
    disable_bucket_pruning: bool = False,
    registry: Any | None = None,
) -> Plan:
    """Plan the data for one run; ``plan.errors`` says why training cannot start (never raises for data).

    ``minimum_image_size``, ``aspect_bucket_rounding`` and ``disable_bucket_pruning`` are the training config's
    keys of those names (the first is a fallback for datasets that set none).
    """
    if registry is None:
        from simpletuner_core.plugins import get_registry

        registry = get_registry()
    plan_kw = {"default_resolution": default_resolution, "default_resolution_type": default_resolution_type,
               "default_minimum_image_size": minimum_image_size, "aspect_bucket_rounding": aspect_bucket_rounding}
    b = _Builder(base_dir, seed, size_multiple, plan_kw, registry)
    b.plan.warnings.extend(inert_key_warnings(datasets))
    conditioning: dict[str, tuple[Any, list[str]]] = {}
    for i, ds in enumerate(datasets):
        if ds.disabled:
            b.plan.warnings.append(f"dataset {ds.id!r} is disabled and was skipped")
            continue
        if ds.dataset_type == "text_embeds":
            continue
        found = b.discover(i, ds)
        if found is None:
            continue
        backend, files = found
        if ds.dataset_type in ("image", "eval"):
            b.image_dataset(i, ds, backend, files)
        else:
            conditioning[ds.id] = (backend, [f for f in files if is_image(f)])
            b.found[ds.id] = len(conditioning[ds.id][1])
    plan = b.plan
    by_id = {ds.id: ds for ds in datasets}
    held_out = {ds.id for ds in datasets if ds.dataset_type == "eval"}
    plan.eval_samples = [s for s in plan.samples if s.dataset_id in held_out]
    plan.samples = [s for s in plan.samples if s.dataset_id not in held_out]
    if any(ds.enabled_image and ds.conditioning_data for ds in datasets):
        from simpletuner_core.data.pairing import check_collatable, pair_references

        pair_references(plan, datasets, conditioning, base_dir=str(base_dir), seed=seed,
                        size_multiple=size_multiple, plan_kw=plan_kw,
                        read_size=lambda backend, ds, path: read_image_size(backend.read_bytes(ds, path)))
    need_batch = train_batch_size * processes
    groups = _drop_small_buckets(plan, by_id, need_batch, train_batch_size, processes,
                                 prune=not disable_bucket_pruning)
    if plan.references:
        kept = {(s.dataset_id, s.path) for s in plan.samples}
        plan.references = [r for r in plan.references if (r.target_dataset_id, r.target_path) in kept]
        check_collatable(plan, by_id, train_batch_size)
    plan.micro_batches_per_epoch = _micro_batches_per_epoch(plan.samples, by_id, need_batch, disable_bucket_pruning)
    found_images = sum(n for k, n in b.found.items() if by_id[k].dataset_type == "image")
    _check_enough(plan, by_id, groups, found_images, train_batch_size, gradient_accumulation_steps, processes,
                  disable_bucket_pruning)
    _summarise(plan, datasets, b.found)
    return plan


def _weight(ds: DatasetConfig) -> int:
    return 1 + ds.repeats


def _drop_small_buckets(plan: Plan, by_id: dict[str, DatasetConfig], need: int, batch: int,
                        processes: int, prune: bool = True) -> dict[tuple[str, Size], int]:
    """A micro-batch comes from one bucket of one dataset: groups that cannot fill one go to ``filtered``, unless
    ``prune`` is off (``disable_bucket_pruning``: the sampler pads their one batch with repeats of their samples).

    Returns every group's image count before dropping (for the error message).
    """
    groups: dict[tuple[str, Size], list[Sample]] = defaultdict(list)
    for s in plan.samples:
        groups[(s.dataset_id, s.plan.target_size)].append(s)
    dropped: set[tuple[str, Size]] = set()
    for (ds_id, size), members in groups.items():
        n, per_epoch = len(members), len(members) * _weight(by_id[ds_id])
        if per_epoch >= need or not prune:
            continue
        dropped.add((ds_id, size))
        with_repeats = f" ({per_epoch} with repeats)" if per_epoch != n else ""
        reason = (f"bucket {bucket_name(size)} of dataset {ds_id!r} holds {n} image(s){with_repeats}, fewer than "
                  f"train_batch_size ({batch}) × processes ({processes}) = {need} (disable_bucket_pruning keeps it)")
        plan.filtered.extend(Filtered(ds_id, s.path, reason) for s in members)
    plan.samples = [s for s in plan.samples if (s.dataset_id, s.plan.target_size) not in dropped]
    counts: Counter[Size] = Counter()
    for s in plan.samples:
        ds = by_id[s.dataset_id]
        if ds.probability > 0:
            counts[s.plan.target_size] += _weight(ds)
    plan.buckets = {bucket_name(size): counts[size] for size in sorted(counts)}
    return {key: len(members) for key, members in groups.items()}


def _micro_batches_per_epoch(samples: list[Sample], by_id: dict[str, DatasetConfig], global_batch: int,
                             pad_remainders: bool = False) -> int:
    """What :class:`~simpletuner_core.data.sampler.BucketBatchSampler` yields per process per epoch."""
    counts: dict[str, Counter[Size]] = defaultdict(Counter)
    for s in samples:
        counts[s.dataset_id][s.plan.target_size] += 1
    return sum(micro_batches(c.values(), by_id[k].repeats, by_id[k].probability, global_batch, pad_remainders)
               for k, c in counts.items())


def _check_enough(plan: Plan, by_id: dict[str, DatasetConfig], groups: dict[tuple[str, Size], int],
                  found: int, batch: int, accumulation: int, processes: int, padded: bool = False) -> None:
    micro, need = plan.micro_batches_per_epoch, batch * processes
    remainder = ("each bucket's remainder is padded to a full batch (disable_bucket_pruning)" if padded
                 else "each bucket's remainder is dropped")
    if micro >= accumulation:
        return
    if micro > 0:
        plan.errors.append(ConfigError("gradient_accumulation_steps", (
            f"an epoch forms {micro} micro-batch{'es' if micro != 1 else ''} per process, fewer than "
            f"gradient_accumulation_steps ({accumulation}) needed for one optimizer step (one micro-batch per "
            f"process takes train_batch_size ({batch}) × processes ({processes}) = {need} samples of one bucket of "
            f"one dataset; {remainder}). Lower --gradient_accumulation_steps or "
            "--train_batch_size, add images, or raise the dataset's repeats."
        )))
        return
    if plan.errors:  # a missing directory or bad resolution already explains the empty plan
        return
    knobs = (f"one micro-batch per process needs train_batch_size ({batch}) × processes ({processes}) = {need} "
             "samples of one bucket of one dataset. Lower --train_batch_size, add images, or raise the dataset's "
             "repeats.")
    active = {k: n for k, n in groups.items() if by_id[k[0]].probability > 0}
    if not active:
        lead = (f"no usable images: {found} found in image datasets, {len(plan.filtered)} filtered "
                "(see the filtered list)")
    else:
        (ds_id, size), n = max(active.items(), key=lambda kv: kv[1] * _weight(by_id[kv[0][0]]))
        per_epoch = n * _weight(by_id[ds_id])
        lead = f"bucket {bucket_name(size)} of dataset {ds_id!r} holds {n} image{'s' if n != 1 else ''}"
        if per_epoch != n:
            lead += f" ({per_epoch} per epoch with repeats)"
        if len(active) > 1:
            lead += f", the largest of {len(active)} buckets"
    plan.errors.append(ConfigError("train_batch_size", f"{lead}; {knobs}"))


def _summarise(plan: Plan, datasets: list[DatasetConfig], found: dict[str, int]) -> None:
    usable = Counter(s.dataset_id for s in [*plan.samples, *plan.eval_samples])
    paired = {p.conditioning_id for p in plan.pairings}
    usable.update(ds_id for ds_id, _ in {(r.sample.dataset_id, r.sample.path) for r in plan.references})
    filtered = Counter(f.dataset_id for f in plan.filtered)
    for ds in datasets:
        if ds.disabled:
            continue
        n_found = found.get(ds.id, 0)
        n_usable = usable[ds.id] if ds.dataset_type != "conditioning" or ds.id in paired else n_found
        plan.datasets.append(DatasetSummary(
            ds.id, ds.dataset_type, n_found, n_usable, filtered[ds.id], ds.repeats, ds.probability,
        ))
        if ds.dataset_type == "image" and ds.id in found and n_usable == 0:
            plan.warnings.append(f"dataset {ds.id!r} contributes no samples ({n_found} images found)")
        if ds.dataset_type == "image" and ds.probability == 0:
            plan.warnings.append(f"dataset {ds.id!r} has probability 0 and is never sampled")
