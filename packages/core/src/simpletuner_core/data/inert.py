"""Dataloader keys that parse but change nothing for the dataset they are set on, reported as plan warnings.

SimpleTuner's dataloader files carry keys that only matter for some dataset types (``cache_dir`` on a
``text_embeds`` entry) or settings (``crop_style`` without ``crop``), and ``skip_file_discovery``, whose startup
scans do not exist here. Refusing them would reject files that train fine, and accepting them silently would let a
user believe they act, so each one set away from its default is named with the reason.
"""

from __future__ import annotations

import attrs

from simpletuner_core.data.config import DatasetConfig, discovery_steps

SIZING_KEYS = ("resolution", "resolution_type", "minimum_image_size", "maximum_image_size",
               "target_downsample_size", "crop", "crop_style", "crop_aspect")

#: Key → the dataset types it acts on (keys not listed act on every type).
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "default": ("text_embeds",),
    "cache_dir": ("text_embeds",),
    "write_batch_size": ("text_embeds",),
    "instance_data_dir": ("image", "conditioning"),
    "cache_dir_vae": ("image", "conditioning"),
    "caption_strategy": ("image",),
    "instance_prompt": ("image",),
    "repeats": ("image",),
    "probability": ("image",),
    "conditioning_data": ("image",),
    "conditioning_type": ("conditioning",),
    **{key: ("image", "conditioning") for key in SIZING_KEYS},
}

#: Why each ``skip_file_discovery`` step has nothing to skip.
DISCOVERY_WHY = {
    "vae": "latents are looked up by a hash of each image's bytes and plan, so there is no scan for unencoded "
           "images to skip",
    "aspect": "buckets are computed from the image headers at every start; there is no stored bucket list to trust",
    "metadata": "image sizes are read from the headers at every start; there is no metadata cache to trust",
    "text": "caption embeddings are looked up by a hash of the caption, so there is no scan for unencoded "
            "captions to skip",
}

_DEFAULTS = {a.name: a.default for a in attrs.fields(DatasetConfig)}


def _is_set(ds: DatasetConfig, key: str) -> bool:
    value, default = getattr(ds, key), _DEFAULTS[key]
    return value != ([] if isinstance(default, attrs.Factory) else default)


def inert_keys(ds: DatasetConfig) -> list[tuple[str, str]]:
    """``(key, why)`` for every key of ``ds`` set away from its default that has no effect on it."""
    out: list[tuple[str, str]] = []
    for key, kinds in APPLIES_TO.items():
        if ds.dataset_type not in kinds and _is_set(ds, key):
            out.append((key, f"only applies to dataset_type {' or '.join(kinds)}, not {ds.dataset_type!r}"))
    if ds.dataset_type == "conditioning" and (ds.conditioning_type or "reference_strict") == "reference_strict":
        out.extend((key, "reference_strict references get their target's resize and crop")
                   for key in SIZING_KEYS if _is_set(ds, key))
    elif ds.dataset_type in ("image", "conditioning"):
        if not ds.crop:
            out.extend((key, "only applies with crop: true") for key in ("crop_style", "crop_aspect")
                       if _is_set(ds, key))
        if ds.target_downsample_size is not None and ds.maximum_image_size is None:
            out.append(("target_downsample_size", "only applies with maximum_image_size (the size above which "
                                                  "images are downsampled)"))
    if ds.dataset_type == "image" and ds.instance_prompt and ds.caption_strategy in ("textfile", "filename"):
        out.append(("instance_prompt", f"only caption_strategy 'instanceprompt' uses it, not "
                                       f"{ds.caption_strategy!r}"))
    steps = [step for step in discovery_steps(ds.skip_file_discovery) if step in DISCOVERY_WHY]
    if steps:
        out.append(("skip_file_discovery", "; ".join(f"{step}: {DISCOVERY_WHY[step]}" for step in steps)))
    return out


def inert_key_warnings(datasets: list[DatasetConfig]) -> list[str]:
    """One plan warning per inert key, naming it by its path (``[0].cache_dir``); disabled datasets are skipped."""
    return [f"[{i}].{key} (dataset {ds.id!r}) has no effect: {why}"
            for i, ds in enumerate(datasets) if not ds.disabled for key, why in inert_keys(ds)]
