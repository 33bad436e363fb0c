"""Built-in LoRA export formats (``lora_format``): ``diffusers`` and ``comfyui``, plus ``simpletuner lora inspect``.

``diffusers`` is peft's layout under a ``transformer.`` prefix, what ``load_lora_weights`` reads. ``comfyui`` is
the kohya-style layout ComfyUI loads (``lora_unet_<original module name>.lora_down/lora_up/alpha``); module names
differ per family, so the family supplies the key map (``ModelFamily.lora_key_maps["comfyui"]``) and core stays
family-agnostic.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import CliCommand, LoraFormatSpec


def _diffusers_convert(state_dict: dict[str, Any], family: Any = None, alpha: float | None = None
                       ) -> dict[str, Any]:
    """diffusers layout: peft keys under a ``transformer.`` prefix (what ``load_lora_weights`` expects)."""
    return {k if k.startswith("transformer.") else f"transformer.{k}": v for k, v in state_dict.items()}


def _diffusers_detect(keys: list[str]) -> bool:
    return any(k.startswith("transformer.") and (".lora_A." in k or ".lora_B." in k) for k in keys)


def _diffusers_load(state_dict: dict[str, Any], family: Any = None) -> tuple[dict[str, Any], float | None]:
    return {k: v for k, v in state_dict.items() if k.startswith("transformer.")}, None


def key_map(family: Any, fmt: str) -> Any:
    """The family's :class:`~simpletuner_core.records.LoraKeyMap` for ``fmt``, or a clear error."""
    factory = getattr(family, "lora_key_maps", {}).get(fmt)
    if factory is None:
        name = getattr(family, "name", family)
        raise ValueError(f"model family {name!r} has no {fmt} LoRA key map; use lora_format diffusers")
    return factory()


def _comfyui_convert(state_dict: dict[str, Any], family: Any, alpha: float | None = None) -> dict[str, Any]:
    return key_map(family, "comfyui").export(_diffusers_convert(state_dict), alpha)


def _comfyui_detect(keys: list[str]) -> bool:
    return any(k.startswith(("lora_unet_", "diffusion_model.")) and ".lora_down." in k for k in keys)


def _comfyui_load(state_dict: dict[str, Any], family: Any) -> tuple[dict[str, Any], float | None]:
    return key_map(family, "comfyui").load(state_dict)


@hookimpl
def register_lora_formats(register: Callable[[LoraFormatSpec], None]) -> None:
    register(LoraFormatSpec("diffusers", _diffusers_convert, _diffusers_detect,
                            "peft keys prefixed with `transformer.` (pytorch_lora_weights.safetensors).",
                            load=_diffusers_load))
    register(LoraFormatSpec("comfyui", _comfyui_convert, _comfyui_detect,
                            "kohya/ComfyUI keys `lora_unet_<module>.lora_down/lora_up/alpha` (family key map).",
                            load=_comfyui_load, needs_key_map=True))


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["inspect"], help="inspect: format, family, rank and key count of a file")
    p.add_argument("file", help="a .safetensors adapter file")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _inspect(args: argparse.Namespace) -> int:
    from simpletuner_core.cli import UsageError
    from simpletuner_core.training.lora_io import LoraFileError, inspect_lora

    try:
        info = inspect_lora(args.file)
    except LoraFileError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key in ("file", "format", "family", "adapter", "rank", "alpha", "keys", "modules"):
            print(f"{key}: {info.get(key)}")
    return 0


@hookimpl
def register_cli_commands(register: Callable[[CliCommand], None]) -> None:
    register(CliCommand("lora", "Inspect adapter files (format, family, rank, key count).", _inspect_args,
                        _inspect))
