"""Built-in adapters: peft LoRA (``lora_type: standard``) and LyCORIS (``lora_type: lycoris``).

An adapter handle exposes the trainable parameters, a state dict for export, the hyper-parameters stored in
checkpoints, and the module that must be registered for checkpointing (LyCORIS keeps its weights outside the
wrapped model).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import AdapterSpec


@attrs.define
class AdapterHandle:
    kind: str
    params: list[Any]
    hyperparameters: dict[str, Any]
    state_dict: Callable[[], dict[str, Any]]
    #: An extra nn.Module holding adapter weights that accelerate must checkpoint (LyCORIS), or None.
    checkpoint_module: Any = None


def _apply_lora(module: Any, cfg: Any, targets: list[str]) -> AdapterHandle:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    alpha = cfg.lora_alpha if cfg.lora_alpha is not None else cfg.lora_rank
    wanted = [t.strip() for t in cfg.lora_target_modules.split(",")] if cfg.lora_target_modules else targets
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=alpha, lora_dropout=cfg.lora_dropout,
                      init_lora_weights=True, target_modules=wanted)
    module.requires_grad_(False)
    # inject_adapter_in_model works on any nn.Module (not every diffusers model has the PEFT mixin).
    inject_adapter_in_model(lora, module, adapter_name="default")
    params = [p for n, p in module.named_parameters() if p.requires_grad]
    for p in params:  # adapters train in fp32 whatever the base precision
        p.data = p.data.float()
    hyper = {"lora_type": "standard", "rank": cfg.lora_rank, "alpha": alpha, "dropout": cfg.lora_dropout,
             "target_modules": sorted(wanted)}
    return AdapterHandle("standard", params, hyper, lambda: get_peft_model_state_dict(module, adapter_name="default"))


_LYCORIS_DEFAULTS = {"algo": "lokr", "multiplier": 1.0, "linear_dim": 16, "linear_alpha": 1, "factor": 16}


def lycoris_settings(cfg: Any) -> dict[str, Any]:
    settings = dict(_LYCORIS_DEFAULTS)
    if cfg.lycoris_config:
        path = Path(cfg.lycoris_config)
        try:
            settings.update(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"lycoris_config {str(path)!r} is not a readable JSON file: {exc}") from exc
    return settings


def _apply_lycoris(module: Any, cfg: Any, targets: list[str]) -> AdapterHandle:
    from lycoris import LycorisNetwork, create_lycoris

    settings = lycoris_settings(cfg)
    preset = settings.pop("apply_preset", None) or {
        "target_module": [], "target_name": [f"*{t}" for t in targets], "use_fnmatch": True,
    }
    LycorisNetwork.apply_preset(preset)  # class-level global state: always set it explicitly
    module.requires_grad_(False)
    algo = settings.pop("algo")
    multiplier = settings.pop("multiplier")
    linear_dim = settings.pop("linear_dim")
    linear_alpha = settings.pop("linear_alpha")
    net = create_lycoris(module, multiplier, linear_dim=linear_dim, linear_alpha=linear_alpha, algo=algo,
                         **settings)
    net.apply_to()
    params = [p for p in net.parameters() if p.requires_grad]
    hyper = {"lora_type": "lycoris", "algo": algo, "linear_dim": linear_dim, "linear_alpha": linear_alpha,
             "preset": preset, **settings}
    return AdapterHandle("lycoris", params, hyper, net.state_dict, checkpoint_module=net)


@hookimpl
def register_adapters(register: Callable[[AdapterSpec], None]) -> None:
    register(AdapterSpec("standard", _apply_lora, "peft LoRA on the family's target modules."))
    register(AdapterSpec("lycoris", _apply_lycoris, "LyCORIS (lokr, locon, loha, full) from --lycoris_config."))


def _diffusers_convert(state_dict: dict[str, Any], family: str) -> dict[str, Any]:
    """diffusers layout: peft keys under a ``transformer.`` prefix (what ``load_lora_weights`` expects)."""
    return {k if k.startswith("transformer.") else f"transformer.{k}": v for k, v in state_dict.items()}


def _diffusers_detect(keys: list[str]) -> bool:
    return any(k.startswith("transformer.") and (".lora_A." in k or ".lora_B." in k) for k in keys)


@hookimpl
def register_lora_formats(register: Callable[[Any], None]) -> None:
    from simpletuner_core.records import LoraFormatSpec

    register(LoraFormatSpec("diffusers", _diffusers_convert, _diffusers_detect,
                            "peft keys prefixed with `transformer.` (pytorch_lora_weights.safetensors)."))
