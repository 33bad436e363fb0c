"""The dataloader JSON (SimpleTuner's ``multidatabackend.json``): a list of dataset objects, typed and checked.

Parsing uses the same cattrs converter as the training config so both speak one error format: every problem is a
:class:`ConfigError` with a path like ``[1].crop_style``, and all of them are reported at once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from simpletuner_core.config.errors import ConfigError, ConfigInvalid, suggest
from simpletuner_core.config.model import CONVERTER, _flatten, _optional_blank

#: Path used for problems with the dataloader document as a whole (it is named by this training-config key).
ROOT_PATH = "data_backend_config"

#: ``eval`` datasets are held out of training and feed the eval loss (``num_eval_images``, ``eval_dataset_id``).
DATASET_TYPES = ("image", "text_embeds", "conditioning", "eval")
RESOLUTION_TYPES = ("pixel", "area", "pixel_area")
CROP_STYLES = ("random", "center", "corner")
CROP_ASPECTS = ("square", "preserve")
METADATA_BACKENDS = ("discovery",)
CONDITIONING_TYPES = ("reference_strict", "reference_loose")
_UNSUPPORTED_METADATA = ("json", "parquet")
#: SimpleTuner's startup scans ``skip_file_discovery`` may name.
DISCOVERY_STEPS = ("vae", "aspect", "text", "metadata")
#: Ids name cache directories (``cache/vae/<id>``): one safe path component, never ``..``.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@attrs.frozen(kw_only=True)
class DatasetConfig:
    """One dataset of the dataloader JSON; field names and meanings follow SimpleTuner's."""

    id: str
    type: str = "local"
    dataset_type: str = "image"
    default: bool = False
    disabled: bool = False
    instance_data_dir: str | None = None
    caption_strategy: str = "textfile"
    instance_prompt: str | None = None
    resolution: float | None = None
    resolution_type: str | None = None
    minimum_image_size: float | None = None
    maximum_image_size: float | None = None
    target_downsample_size: float | None = None
    crop: bool = False
    crop_style: str = "random"
    crop_aspect: str = "square"
    cache_dir_vae: str | None = None
    cache_dir: str | None = None
    write_batch_size: int = 64
    metadata_backend: str = "discovery"
    #: Extra passes per epoch: ``repeats: 1`` shows every image twice per epoch.
    repeats: int = 0
    probability: float = 1.0
    conditioning_data: list[str] = attrs.field(factory=list, hash=False)
    conditioning_type: str | None = None
    #: SimpleTuner's startup scans to skip (comma/space separated); accepted, reported as having no effect.
    skip_file_discovery: str | None = None

    @property
    def enabled_image(self) -> bool:
        return self.dataset_type == "image" and not self.disabled


_FIELDS = [a.name for a in attrs.fields(DatasetConfig)]


def discovery_steps(value: str | None) -> list[str]:
    """``"vae, aspect text"`` → ``["vae", "aspect", "text"]`` (SimpleTuner accepts commas and spaces)."""
    return [part for part in re.split(r"[\s,]+", value or "") if part]


def resolve_data_dir(dataset: DatasetConfig, base_dir: str | Path) -> str:
    """``instance_data_dir`` as an absolute path, or ``""`` when unset: ``~`` is expanded first, then a relative
    path resolves against ``base_dir`` (the dataloader JSON's directory). Listing, planning and pairing all use
    this one resolver, so a file's path always sits under its dataset's root."""
    if not dataset.instance_data_dir:
        return ""
    root = os.path.expanduser(dataset.instance_data_dir)
    return os.path.abspath(root if os.path.isabs(root) else os.path.join(str(base_dir), root))


def _structure_one(index: int, raw: Any) -> tuple[DatasetConfig | None, bool, list[ConfigError]]:
    """Structure one entry: ``(dataset, complete, errors)``.

    When some fields are wrong, the entry is structured again without them so its other fields still get the
    semantic checks (every problem is reported in one pass); ``complete`` is False for such a partial dataset.
    """
    where = f"[{index}]"
    if not isinstance(raw, Mapping):
        return None, False, [ConfigError(where, f"expected a dataset object, got {type(raw).__name__}")]
    data = _optional_blank(DatasetConfig, {str(k): v for k, v in raw.items()})
    try:
        return CONVERTER.structure(data, DatasetConfig), True, []
    except Exception as exc:  # cattrs exception groups → one ConfigError per problem
        flat = _flatten(exc, "", _FIELDS)
    errors = [
        attrs.evolve(
            err,
            path=f"{where}.{err.path}" if err.path else where,
            message="unknown dataset key" if err.message == "unknown config key" else err.message,
        )
        for err in flat
    ]
    bad = {err.path.split(".")[0].split("[")[0] for err in flat}
    rest = {k: v for k, v in data.items() if k in _FIELDS and k not in bad}
    rest.setdefault("id", f"<dataset {index}>")
    try:
        partial = CONVERTER.structure(rest, DatasetConfig)
    except Exception:
        return None, False, errors
    return partial, False, errors


def _choice(errors: list[ConfigError], path: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        errors.append(ConfigError(path, f"{value!r} is not one of {', '.join(choices)}", suggest(value, choices)))


def _registered(errors: list[ConfigError], path: str, value: str, table: Any, kind: str) -> None:
    if value not in table:
        known = table.names()
        errors.append(ConfigError(
            path, f"unknown {kind} {value!r} (known: {', '.join(known) or 'none'})", suggest(value, known),
        ))


def _check_dataset(i: int, ds: DatasetConfig, registry: Any) -> list[ConfigError]:
    p = f"[{i}]"
    errors: list[ConfigError] = []
    if not ID_PATTERN.fullmatch(ds.id) or ".." in ds.id:
        errors.append(ConfigError(
            f"{p}.id", f"id {ds.id!r} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit, without '..' (it names the dataset's cache directory)",
        ))
    _choice(errors, f"{p}.dataset_type", ds.dataset_type, DATASET_TYPES)
    _choice(errors, f"{p}.resolution_type", ds.resolution_type, RESOLUTION_TYPES)
    _choice(errors, f"{p}.crop_style", ds.crop_style, CROP_STYLES)
    _choice(errors, f"{p}.crop_aspect", ds.crop_aspect, CROP_ASPECTS)
    _choice(errors, f"{p}.conditioning_type", ds.conditioning_type, CONDITIONING_TYPES)
    if ds.metadata_backend in _UNSUPPORTED_METADATA:
        errors.append(ConfigError(
            f"{p}.metadata_backend",
            f"metadata_backend {ds.metadata_backend!r} is not supported; use 'discovery' "
            "(images are scanned and sized at startup, no metadata file needed)",
        ))
    else:
        _choice(errors, f"{p}.metadata_backend", ds.metadata_backend, METADATA_BACKENDS)
    _registered(errors, f"{p}.type", ds.type, registry.data_backends, "data backend type")
    _registered(errors, f"{p}.caption_strategy", ds.caption_strategy, registry.caption_strategies,
                "caption_strategy")
    if ds.dataset_type in ("image", "conditioning", "eval") and not ds.instance_data_dir:
        errors.append(ConfigError(f"{p}.instance_data_dir", f"{ds.dataset_type} datasets need instance_data_dir"))
    if ds.dataset_type in ("image", "eval") and ds.caption_strategy == "instanceprompt" and not ds.instance_prompt:
        errors.append(ConfigError(f"{p}.instance_prompt", "caption_strategy 'instanceprompt' needs instance_prompt"))
    if not 0.0 <= ds.probability <= 1.0:
        errors.append(ConfigError(f"{p}.probability", f"must be between 0 and 1, got {ds.probability:g}"))
    if ds.repeats < 0:
        errors.append(ConfigError(f"{p}.repeats", f"must be 0 or more, got {ds.repeats}"))
    if ds.write_batch_size < 1:
        errors.append(ConfigError(f"{p}.write_batch_size", f"must be at least 1, got {ds.write_batch_size}"))
    for name in ("resolution", "maximum_image_size", "target_downsample_size"):
        value = getattr(ds, name)
        if value is not None and value <= 0:
            errors.append(ConfigError(f"{p}.{name}", f"must be positive, got {value:g}"))
    if ds.minimum_image_size is not None and ds.minimum_image_size < 0:  # 0 = none, as in SimpleTuner
        errors.append(ConfigError(f"{p}.minimum_image_size",
                                  f"must be 0 (no minimum) or more, got {ds.minimum_image_size:g}"))
    for step in discovery_steps(ds.skip_file_discovery):
        if step not in DISCOVERY_STEPS:
            errors.append(ConfigError(
                f"{p}.skip_file_discovery", f"unknown discovery step {step!r} (known: {', '.join(DISCOVERY_STEPS)})",
                suggest(step, DISCOVERY_STEPS),
            ))
    errors.extend(_check_sizes(p, ds))
    return errors


def _check_sizes(p: str, ds: DatasetConfig) -> list[ConfigError]:
    """Catch unit mix-ups (1024 megapixels, 1 px) and contradictory size bounds."""
    errors: list[ConfigError] = []
    res, rtype = ds.resolution, ds.resolution_type
    if res is not None and res > 0:
        if rtype == "area" and res > 16:
            errors.append(ConfigError(
                f"{p}.resolution", f"resolution {res:g} with resolution_type 'area' means {res:g} megapixels",
                "pixel_area",
            ))
        if rtype in ("pixel", "pixel_area") and res < 16:
            errors.append(ConfigError(
                f"{p}.resolution", f"resolution {res:g} with resolution_type {rtype!r} means {res:g} px", "area",
            ))
    lo, hi, down = ds.minimum_image_size, ds.maximum_image_size, ds.target_downsample_size
    if lo and hi is not None and 0 < hi < lo:
        errors.append(ConfigError(f"{p}.maximum_image_size", f"{hi:g} is below minimum_image_size {lo:g}"))
    if down is not None and hi is not None and 0 < hi < down:
        errors.append(ConfigError(f"{p}.target_downsample_size", f"{down:g} is above maximum_image_size {hi:g}"))
    return errors


def _check_together(datasets: list[tuple[int, DatasetConfig]]) -> list[ConfigError]:
    errors: list[ConfigError] = []
    by_id: dict[str, int] = {}
    for i, ds in datasets:
        if ds.id in by_id:
            errors.append(ConfigError(f"[{i}].id", f"duplicate id {ds.id!r} (also used by [{by_id[ds.id]}])"))
        else:
            by_id[ds.id] = i
    kinds = {ds.id: ds.dataset_type for _, ds in datasets}
    conditioning_ids = [k for k, v in kinds.items() if v == "conditioning"]
    for i, ds in datasets:
        for k, ref in enumerate(ds.conditioning_data):
            path = f"[{i}].conditioning_data[{k}]"
            if ref not in kinds:
                errors.append(ConfigError(path, f"no dataset has id {ref!r}", suggest(ref, conditioning_ids)))
            elif kinds[ref] != "conditioning":
                errors.append(ConfigError(
                    path, f"dataset {ref!r} has dataset_type {kinds[ref]!r}; conditioning_data must name "
                    "datasets with dataset_type 'conditioning'",
                ))
    images = [ds for _, ds in datasets if ds.enabled_image]
    if not images:
        errors.append(ConfigError(ROOT_PATH, "no enabled dataset with dataset_type 'image'"))
    elif not any(ds.probability > 0 for ds in images):
        errors.append(ConfigError(ROOT_PATH, "every enabled image dataset has probability 0; nothing would train"))
    defaults = [i for i, ds in datasets if ds.dataset_type == "text_embeds" and ds.default and not ds.disabled]
    for i in defaults[1:]:
        errors.append(ConfigError(
            f"[{i}].default", f"only one text_embeds dataset may be default (already [{defaults[0]}])",
        ))
    return errors


#: Training-config keys that serve as defaults for the image datasets that set none (SimpleTuner's config-wide
#: ``--caption_strategy`` / ``--instance_prompt``); its spelling ``instance_prompt`` names our ``instanceprompt``.
DATASET_DEFAULT_KEYS = ("caption_strategy", "instance_prompt")
_STRATEGY_SPELLINGS = {"instance_prompt": "instanceprompt"}


def _with_defaults(item: Any, defaults: Mapping[str, Any]) -> Any:
    if not isinstance(item, Mapping) or item.get("dataset_type", "image") != "image":
        return item
    filled = dict(item)
    for key in DATASET_DEFAULT_KEYS:
        if key not in filled and defaults.get(key) is not None:
            filled[key] = defaults[key]
    if isinstance(filled.get("caption_strategy"), str):
        filled["caption_strategy"] = _STRATEGY_SPELLINGS.get(filled["caption_strategy"], filled["caption_strategy"])
    return filled


def parse_dataloader(raw: Any, registry: Any | None = None,
                     defaults: Mapping[str, Any] | None = None) -> list[DatasetConfig]:
    """Structure and check a dataloader document; raise :class:`ConfigInvalid` listing every problem.

    ``defaults`` holds the training config's :data:`DATASET_DEFAULT_KEYS` for image datasets that set none."""
    if registry is None:
        from simpletuner_core.plugins import get_registry

        registry = get_registry()
    if not isinstance(raw, list):
        raise ConfigInvalid([ConfigError(ROOT_PATH, f"expected a JSON list of datasets, got {type(raw).__name__}")])
    if not raw:
        raise ConfigInvalid([ConfigError(ROOT_PATH, "the dataloader list is empty; add at least one image dataset")])
    errors: list[ConfigError] = []
    parsed: list[tuple[int, DatasetConfig]] = []
    for i, item in enumerate(raw):
        ds, complete, errs = _structure_one(i, _with_defaults(item, defaults or {}))
        errors.extend(errs)
        if ds is not None:
            seen = {e.path for e in errs}
            errors.extend(e for e in _check_dataset(i, ds, registry) if e.path not in seen)
        if ds is not None and complete:
            parsed.append((i, ds))
    if len(parsed) == len(raw):  # cross-dataset rules only make sense once every entry parsed
        errors.extend(_check_together(parsed))
    if errors:
        raise ConfigInvalid(errors)
    return [ds for _, ds in parsed]


def load_dataloader(path: Path, registry: Any | None = None,
                    defaults: Mapping[str, Any] | None = None) -> list[DatasetConfig]:
    """Read and parse a dataloader JSON file; I/O and JSON problems are reported like any config error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigInvalid([ConfigError(ROOT_PATH, f"dataloader file {path} not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigInvalid([ConfigError(ROOT_PATH, f"cannot read dataloader file {path}: {exc}")]) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigInvalid([ConfigError(
            ROOT_PATH, f"dataloader file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        )]) from None
    return parse_dataloader(raw, registry, defaults)


def dump_dataloader(datasets: list[DatasetConfig]) -> list[dict[str, Any]]:
    """The wire form, with defaults left out so written files stay as short as the tutorial's."""
    out = []
    for ds in datasets:
        full = CONVERTER.unstructure(ds)
        defaults = {a.name: a.default for a in attrs.fields(DatasetConfig)}
        out.append({
            k: v for k, v in full.items()
            if k == "id" or not (v == defaults[k] or (isinstance(defaults[k], attrs.Factory) and v == []))
        })
    return out
