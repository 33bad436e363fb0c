"""Typed records that plugins hand to the host through ``register`` callbacks.

Plugins never return lists for the host to flatten: each ``register_*`` hook receives a callback and calls it once
per record. The host validates and stores them (see :mod:`simpletuner_core.plugins.registry`). Heavy libraries are
imported inside the callables, never at module level, so listing plugins stays torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs


def _name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value or not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be a non-empty word, got {value!r}")


@attrs.frozen
class Flavour:
    """A named starting point for a family: a hub id, or a builder that makes the model offline."""

    name: str = attrs.field(validator=_name)
    hub_id: str | None = None
    description: str = ""
    #: Callable ``(cache_dir: Path) -> Path`` returning a local diffusers directory, for offline flavours.
    build: Callable[..., Any] | None = None
    #: What this flavour can do beyond the family's basics, e.g. ``reference_conditioning`` (edit/reference
    #: pairs from ``conditioning`` datasets); the engine refuses a dataloader asking for more.
    features: tuple[str, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class LoraKeyMap:
    """How one family names its peft LoRA weights in one export format, both ways.

    ``export(state, alpha) -> state``: peft keys (``transformer.``-prefixed, ``lora_A``/``lora_B``) and the LoRA
    alpha → the format's keys. ``load(state) -> (state, alpha)``: the inverse, for ``init_lora``. Both must be
    exact: a LoRA exported then loaded changes no output.
    """

    format: str = attrs.field(validator=_name)
    export: Callable[..., dict[str, Any]] = attrs.field(repr=False)
    load: Callable[..., tuple[dict[str, Any], float | None]] = attrs.field(repr=False)


@attrs.frozen
class ModelFamily:
    """Everything the generic engine needs to know about one model family.

    ``trainer`` is a zero-argument callable returning the family's trainer class (imported lazily); the class
    implements :class:`simpletuner_core.training.family.FamilyTrainer`.
    """

    name: str = attrs.field(validator=_name)
    trainer: Callable[[], type] = attrs.field(repr=False)
    flavours: Mapping[str, Flavour] = attrs.field(factory=dict, converter=lambda v: dict(v))
    aliases: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    model_types: tuple[str, ...] = ("full", "lora")
    adapter_types: tuple[str, ...] = ("standard",)
    default_flavour: str | None = None
    #: Config values applied under the user's values when this family is chosen.
    defaults: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda v: dict(v))
    description: str = ""
    #: Families that validate with a pipeline declare the pipeline class name (documentation only).
    pipeline: str = ""
    #: Pixel sizes must be multiples of this (VAE downsampling × patch size); used by the preflight plan.
    size_multiple: int = 16
    #: Optional features the family honours, e.g. ``clip_skip``; the config rules reject the others.
    #: ``flow_matching`` marks a flow-matching family (prediction_type may only be flow_matching).
    features: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Export format name → zero-argument callable returning the family's :class:`LoraKeyMap` for that format
    #: (imported lazily). ``diffusers`` needs none: it is peft's own layout.
    lora_key_maps: Mapping[str, Callable[[], Any]] = attrs.field(factory=dict, converter=lambda v: dict(v),
                                                                  repr=False)
    #: Names of the trainer's LyCORIS presets (``"apply_preset": "<name>"``), so the config rules can check a
    #: name without importing the trainer (and torch). Empty: not checked until the adapter is applied.
    lycoris_presets: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: ``memory_shapes(flavour, config) -> simpletuner_core.memory.arch.Architecture``: the flavour's layers,
    #: frozen components and per-block saved tensors as plain numbers (torch-free), for the memory plan
    #: (``simpletuner config plan``). None: the family gets no plan.
    memory_shapes: Callable[..., Any] | None = attrs.field(default=None, repr=False)


@attrs.frozen
class OptimizerSpec:
    """``factory(params, config) -> torch.optim.Optimizer``; ``unavailable()`` returns a reason or None."""

    name: str = attrs.field(validator=_name)
    factory: Callable[..., Any] = attrs.field(repr=False)
    description: str = ""
    unavailable: Callable[[], str | None] = attrs.field(default=lambda: None, repr=False)


@attrs.frozen
class SchedulerSpec:
    """``factory(optimizer, config, total_steps) -> torch LR scheduler``."""

    name: str = attrs.field(validator=_name)
    factory: Callable[..., Any] = attrs.field(repr=False)
    description: str = ""


@attrs.frozen
class DataBackendSpec:
    """A storage backend for datasets (``type`` in the dataloader JSON).

    ``list_files(dataset) -> list[str]`` and ``read_bytes(dataset, path) -> bytes``.
    """

    name: str = attrs.field(validator=_name)
    list_files: Callable[..., list[str]] = attrs.field(repr=False)
    read_bytes: Callable[..., bytes] = attrs.field(repr=False)
    description: str = ""


@attrs.frozen
class CaptionStrategySpec:
    """``caption(dataset, image_path, read_text) -> str | None`` (None: image has no caption)."""

    name: str = attrs.field(validator=_name)
    caption: Callable[..., str | None] = attrs.field(repr=False)
    description: str = ""


@attrs.frozen
class AdapterSpec:
    """``apply(module, config, target_modules, presets) -> AdapterHandle`` adding trainable weights to a frozen
    module. ``describe(config, target_modules, presets) -> dict`` returns the hyper-parameters ``apply`` would
    use, without touching a model: the engine compares them with a checkpoint's before loading any weights.
    ``presets`` are the family's named LyCORIS presets (name → ``apply_preset`` dict)."""

    name: str = attrs.field(validator=_name)
    apply: Callable[..., Any] = attrs.field(repr=False)
    description: str = ""
    describe: Callable[..., dict[str, Any]] | None = attrs.field(default=None, repr=False)


@attrs.frozen
class LoraFormatSpec:
    """Key layout for exported adapter weights.

    ``convert(state_dict, family, alpha) -> state_dict`` turns peft keys (``transformer.``-prefixed) into the
    format's; ``detect(keys) -> bool`` recognises a file in this format; ``load(state_dict, family) ->
    (state_dict, alpha | None)`` turns it back into peft keys (``init_lora``, ``lora inspect``). ``family`` is
    the :class:`ModelFamily` record (formats that rename modules use its ``lora_key_maps``).
    """

    name: str = attrs.field(validator=_name)
    convert: Callable[..., Any] = attrs.field(repr=False)
    detect: Callable[..., bool] = attrs.field(repr=False)
    description: str = ""
    load: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    #: The format renames modules per family: the config rules require ``family.lora_key_maps[name]``.
    needs_key_map: bool = False


@attrs.frozen
class QuantizerSpec:
    """``quantize(module, config) -> None`` turns a frozen base module into a quantized one in place."""

    name: str = attrs.field(validator=_name)
    quantize: Callable[..., Any] = attrs.field(repr=False)
    description: str = ""


@attrs.frozen
class ValidationMethodSpec:
    """``run(trainer, model, config, step, context=None) -> list`` of PIL images or ``RenderedImage`` items."""

    name: str = attrs.field(validator=_name)
    run: Callable[..., Any] = attrs.field(repr=False)
    description: str = ""


@attrs.frozen
class PublisherSpec:
    """Uploads checkpoints and the final model, in a background thread.

    ``wants(config, kind) -> bool`` says whether this job publishes ``kind`` (``checkpoint`` or ``final``) here;
    ``publish(item) -> str | None`` uploads :class:`simpletuner_core.hooks.publish.PublishItem` and returns the
    remote location (handed to ``post_upload_script`` as ``{remote_checkpoint_path}``).
    """

    name: str = attrs.field(validator=_name)
    publish: Callable[..., Any] = attrs.field(repr=False)
    description: str = ""
    wants: Callable[..., bool] = attrs.field(default=lambda config, kind: False, repr=False)


@attrs.frozen
class EventSinkSpec:
    """``factory(config, job_dir) -> EventSink | None``; None when the config does not ask for this sink."""

    name: str = attrs.field(validator=_name)
    factory: Callable[..., Any] = attrs.field(repr=False)
    description: str = ""


@attrs.frozen
class ExecutorSpec:
    """``factory(runner) -> Executor | None``: where jobs run (see :mod:`simpletuner_core.jobs.executors`).

    The factory returns None when the executor is not enabled in this process (a cluster executor without an
    address, say); jobs it holds are then left alone by this process's runner rather than failed.
    """

    name: str = attrs.field(validator=_name)
    factory: Callable[..., Any] = attrs.field(repr=False)
    description: str = ""
    remote: bool = True  # answers ``target: worker`` (and is tried first for ``target: auto``)


@attrs.frozen
class ConfigField:
    """A config key contributed by a plugin (core's own keys live in :mod:`simpletuner_core.config.model`)."""

    name: str = attrs.field(validator=_name)
    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()
    #: Family the key belongs to; rules reject it for other families. None: any family.
    family: str | None = None
    #: ``check(cfg) -> message | None``: a semantic rule reported at this key's path (run when the key's family is
    #: the config's, or for any family when ``family`` is None).
    check: Callable[[Any], str | None] | None = attrs.field(default=None, repr=False)
    #: ``warn(cfg) -> note | None``: a note for ``validate`` to print and jobs to log (e.g. a key another overrides).
    warn: Callable[[Any], str | None] | None = attrs.field(default=None, repr=False)


@attrs.frozen
class ConfigExample:
    """A shipped environment template (``GET /api/configs/examples``).

    ``config`` uses wire keys (``--key``) and ``dataloader`` the dataloader JSON; string values may contain the
    placeholders ``{datasets_dir}``, ``{output_dir}``, ``{cache_dir}`` and ``{env}``, filled in when an
    environment is created from the example. ``datasets`` names the folders (under ``datasets_dir``) it reads.
    ``demo_data``: missing dataset folders are filled with core's demo set when an environment is created from
    it (images with captions, or edit/reference pairs), so the example runs as shipped.
    """

    name: str = attrs.field(validator=_name)
    description: str
    config: dict[str, Any] = attrs.field(repr=False)
    dataloader: list[dict[str, Any]] = attrs.field(repr=False)
    datasets: tuple[str, ...] = ()
    demo_data: bool = False


@attrs.frozen
class CliCommand:
    """A ``simpletuner`` subcommand: ``add_arguments(parser)`` then ``run(args) -> int`` exit code."""

    name: str = attrs.field(validator=_name)
    help: str
    add_arguments: Callable[..., None] = attrs.field(repr=False)
    run: Callable[..., int] = attrs.field(repr=False)
