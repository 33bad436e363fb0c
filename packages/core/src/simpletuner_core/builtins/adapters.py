"""Built-in adapters: peft LoRA (``lora_type: standard``) and LyCORIS (``lora_type: lycoris``).

An adapter handle exposes the trainable parameters, a state dict for export, the hyper-parameters stored in
checkpoints, and the module that must be registered for checkpointing (LyCORIS keeps its weights outside the
wrapped model).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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
    #: ``load(state_dict)`` puts saved adapter weights (this handle's own key layout) into the adapter.
    load: Callable[[dict[str, Any]], None] | None = None


def _lora_targets(cfg: Any, targets: list[str]) -> list[str]:
    return [t.strip() for t in cfg.lora_target_modules.split(",")] if cfg.lora_target_modules else list(targets)


def describe_lora(cfg: Any, targets: list[str], presets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The peft LoRA hyper-parameters for ``cfg`` (stored in checkpoints and exported files)."""
    alpha = cfg.lora_alpha if cfg.lora_alpha is not None else cfg.lora_rank
    return {"lora_type": "standard", "rank": cfg.lora_rank, "alpha": alpha, "dropout": cfg.lora_dropout,
            "target_modules": sorted(_lora_targets(cfg, targets))}


def _apply_lora(module: Any, cfg: Any, targets: list[str], presets: Mapping[str, Any] | None = None
                ) -> AdapterHandle:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    hyper = describe_lora(cfg, targets)
    lora = LoraConfig(r=hyper["rank"], lora_alpha=hyper["alpha"], lora_dropout=hyper["dropout"],
                      init_lora_weights=True, target_modules=_lora_targets(cfg, targets))
    module.requires_grad_(False)
    # inject_adapter_in_model works on any nn.Module (not every diffusers model has the PEFT mixin).
    inject_adapter_in_model(lora, module, adapter_name="default")
    params = [p for n, p in module.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"no module matches the LoRA targets {hyper['target_modules']}; check lora_target_modules")
    for p in params:  # adapters train in fp32 whatever the base precision
        p.data = p.data.float()

    def load(state: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(module, state, adapter_name="default")
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise ValueError(f"{len(unexpected)} LoRA weight(s) match no adapted module, e.g. {unexpected[0]}")

    return AdapterHandle("standard", params, hyper, lambda: get_peft_model_state_dict(module, adapter_name="default"),
                         load=load)


_LYCORIS_DEFAULTS = {"algo": "lokr", "multiplier": 1.0, "factor": 16}
LYCORIS_ALGOS = ("lokr", "locon", "loha", "full")


def lycoris_settings(cfg: Any) -> dict[str, Any]:
    """``--lycoris_config`` over the defaults; ``linear_dim``/``linear_alpha``/``dropout`` default to the
    ``lora_rank``/``lora_alpha``/``lora_dropout`` keys so the tutorial's LoRA knobs mean something here too."""
    settings: dict[str, Any] = dict(_LYCORIS_DEFAULTS)
    settings["linear_dim"] = cfg.lora_rank
    settings["linear_alpha"] = cfg.lora_alpha if cfg.lora_alpha is not None else 1
    if cfg.lora_dropout:
        settings["dropout"] = cfg.lora_dropout
    if cfg.lycoris_config:
        path = Path(cfg.lycoris_config).expanduser()
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"lycoris_config {str(path)!r} is not a readable JSON file: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"lycoris_config {str(path)!r} must hold a JSON object")
        settings.update(loaded)
    if settings["algo"] not in LYCORIS_ALGOS:
        raise ValueError(f"lycoris_config algo {settings['algo']!r} is not one of {', '.join(LYCORIS_ALGOS)}")
    return settings


def name_preset(names: list[str]) -> dict[str, Any]:
    """A LyCORIS preset adapting exactly the modules peft's ``target_modules`` would: each name matches a module
    path equal to it or ending in ``.name``."""
    return {"target_module": [], "target_name": [p for n in names for p in (n, f"*.{n}")], "use_fnmatch": True}


def _preset(settings: dict[str, Any], targets: list[str], presets: Mapping[str, Any],
            named: list[str] | None = None) -> dict[str, Any]:
    """``apply_preset`` may be a dict (LyCORIS' own form) or the name of one of the family's presets; without
    one, ``lora_target_modules`` (``named``) picks the modules by name, else the family's default preset."""
    chosen = settings.pop("apply_preset", None)
    if chosen is None and named:
        return name_preset(named)
    if isinstance(chosen, str):
        if chosen not in presets:
            raise ValueError(f"unknown LyCORIS preset {chosen!r} for this family "
                             f"(known: {', '.join(sorted(presets)) or 'none'})")
        chosen = presets[chosen]
    if chosen is None:
        chosen = presets.get("default") or {
            "target_module": [], "target_name": [f"*{t}" for t in targets], "use_fnmatch": True,
        }
    return dict(chosen)


def describe_lycoris(cfg: Any, targets: list[str], presets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    settings = lycoris_settings(cfg)
    named = _lora_targets(cfg, []) if cfg.lora_target_modules else None
    preset = _preset(settings, targets, presets or {}, named)
    return {"lora_type": "lycoris", "preset": preset, **settings}


def _apply_lycoris(module: Any, cfg: Any, targets: list[str], presets: Mapping[str, Any] | None = None
                   ) -> AdapterHandle:
    from lycoris import LycorisNetwork, create_lycoris

    hyper = describe_lycoris(cfg, targets, presets)
    settings = {k: v for k, v in hyper.items() if k not in ("lora_type", "preset")}
    # apply_preset is class-level global state shared by every network in the process: set it every time,
    # with a fresh dict (LyCORIS keeps the object).
    LycorisNetwork.apply_preset(json.loads(json.dumps(hyper["preset"])))
    module.requires_grad_(False)
    algo, multiplier = settings.pop("algo"), settings.pop("multiplier")
    linear_dim, linear_alpha = settings.pop("linear_dim"), settings.pop("linear_alpha")
    net = create_lycoris(module, multiplier, linear_dim=linear_dim, linear_alpha=linear_alpha, algo=algo,
                         **settings)
    net.apply_to()
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"the LyCORIS preset {hyper['preset']} matches no module of this model")

    def load(state: dict[str, Any]) -> None:
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or missing:
            raise ValueError(f"LyCORIS weights do not fit this network: {len(missing)} missing, "
                             f"{len(unexpected)} unexpected (e.g. {(list(unexpected) or list(missing))[0]})")

    return AdapterHandle("lycoris", params, hyper, net.state_dict, checkpoint_module=net, load=load)


@hookimpl
def register_adapters(register: Callable[[AdapterSpec], None]) -> None:
    register(AdapterSpec("standard", _apply_lora, "peft LoRA on the family's target modules.",
                         describe=describe_lora))
    register(AdapterSpec("lycoris", _apply_lycoris, "LyCORIS (lokr, locon, loha, full) from --lycoris_config.",
                         describe=describe_lycoris))
