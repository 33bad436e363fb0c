"""Every hook simpletuner-core calls, in one place.

Each ``register_*`` hook receives a ``register`` callback; call it once per record you contribute. The host owns
the registries, validates what it receives and rejects duplicates with the name of both plugins. Implement hooks
with :data:`simpletuner_core.hookimpl`; a plugin module must stay light (import torch inside the callables).
"""

from __future__ import annotations

from collections.abc import Callable

from pluggy import HookimplMarker, HookspecMarker

from simpletuner_core.records import (
    AdapterSpec,
    CaptionStrategySpec,
    CliCommand,
    ConfigExample,
    ConfigField,
    DataBackendSpec,
    EventSinkSpec,
    ExecutorSpec,
    LoraFormatSpec,
    ModelFamily,
    OptimizerSpec,
    PublisherSpec,
    QuantizerSpec,
    SchedulerSpec,
    ValidationMethodSpec,
)

PROJECT = "simpletuner"
hookspec = HookspecMarker(PROJECT)
hookimpl = HookimplMarker(PROJECT)

# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


@hookspec
def register_model_families(register: Callable[[ModelFamily], None]) -> None:
    """Contribute model families (name, aliases, flavours, trainer class factory)."""


@hookspec
def register_config_fields(register: Callable[[ConfigField], None]) -> None:
    """Contribute config keys beyond core's own (typed, with default and help); usable as ``--key``."""


@hookspec
def register_adapters(register: Callable[[AdapterSpec], None]) -> None:
    """Contribute adapter kinds selected by ``lora_type`` (core ships ``standard`` and ``lycoris``)."""


@hookspec
def register_lora_formats(register: Callable[[LoraFormatSpec], None]) -> None:
    """Contribute export key layouts for adapter weights, selected by ``lora_format`` (core ships ``diffusers`` and
    ``comfyui``; module renames per family come from ``ModelFamily.lora_key_maps``)."""


@hookspec
def register_quantizers(register: Callable[[QuantizerSpec], None]) -> None:
    """Contribute base-model quantizers, selected by ``base_model_precision`` (e.g. ``int8-quanto``)."""


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


@hookspec
def register_data_backends(register: Callable[[DataBackendSpec], None]) -> None:
    """Contribute dataset storage backends, selected by ``type`` in the dataloader JSON."""


@hookspec
def register_caption_strategies(register: Callable[[CaptionStrategySpec], None]) -> None:
    """Contribute caption strategies, selected by ``caption_strategy`` in the dataloader JSON."""


# ---------------------------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------------------------


@hookspec
def register_optimizers(register: Callable[[OptimizerSpec], None]) -> None:
    """Contribute optimizers, selected by ``optimizer``."""


@hookspec
def register_lr_schedulers(register: Callable[[SchedulerSpec], None]) -> None:
    """Contribute learning-rate schedules, selected by ``lr_scheduler``."""


# ---------------------------------------------------------------------------------------------------------------
# Outputs: validation, publishing, events
# ---------------------------------------------------------------------------------------------------------------


@hookspec
def register_validation_methods(register: Callable[[ValidationMethodSpec], None]) -> None:
    """Contribute validation methods, selected by ``validation_method``."""


@hookspec
def register_publishers(register: Callable[[PublisherSpec], None]) -> None:
    """Contribute publishers that receive checkpoints and final weights."""


@hookspec
def register_config_examples(register: Callable[[ConfigExample], None]) -> None:
    """Contribute environment templates (a config plus its dataloader), listed by the server's examples API."""


@hookspec
def register_event_sinks(register: Callable[[EventSinkSpec], None]) -> None:
    """Contribute event sinks; each factory decides from the config whether it is active for a job."""


@hookspec
def register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    """Contribute executors: where a job's trainer runs (``local`` is core's; remote workers, Ray, ...)."""


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


@hookspec
def register_cli_commands(register: Callable[[CliCommand], None]) -> None:
    """Contribute ``simpletuner`` subcommands (the server package adds ``server``)."""
