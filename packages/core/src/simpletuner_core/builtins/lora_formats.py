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
    return any(k.startswith(COMFYUI_PREFIX) and ".lora_down." in k for k in keys)


COMFYUI_PREFIX = "lora_unet_"
#: What a ComfyUI file may hold that this loader reads: a plain LoRA on the denoiser.
_COMFYUI_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")


def _unsupported_kind(key: str) -> str:
    if key.startswith("lora_te"):
        return "text-encoder LoRA (lora_te*)"
    if not key.startswith(COMFYUI_PREFIX):
        return f"{key.split('.')[0]}.*" if "." in key else key
    suffix = key[len(COMFYUI_PREFIX):].split(".", 1)[1] if "." in key else key
    if suffix.startswith("dora_scale"):
        return "DoRA (.dora_scale)"
    return f".{suffix.split('.')[0]}"


def comfyui_unsupported(keys: list[str]) -> list[str]:
    """``"<kind>: <count> key(s)"`` for every key the ComfyUI loader cannot use, most frequent first."""
    kinds: dict[str, int] = {}
    for key in keys:
        if not (key.startswith(COMFYUI_PREFIX) and key.endswith(_COMFYUI_SUFFIXES)):
            kind = _unsupported_kind(key)
            kinds[kind] = kinds.get(kind, 0) + 1
    return [f"{kind}: {n} key(s)" for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))]


def _comfyui_load(state_dict: dict[str, Any], family: Any) -> tuple[dict[str, Any], float | None]:
    """Every key must be a denoiser LoRA weight: text-encoder LoRAs, DoRA scales or LyCORIS parts would otherwise
    be dropped without a word, and the run would train from a different adapter than the file holds."""
    unsupported = comfyui_unsupported(list(state_dict))
    if unsupported:
        raise ValueError(f"cannot load every weight of this ComfyUI file: unsupported {'; '.join(unsupported)}. "
                         f"Only a plain LoRA on the denoiser ({COMFYUI_PREFIX}<module>.lora_down/lora_up/alpha) "
                         "can be used as init_lora")
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
