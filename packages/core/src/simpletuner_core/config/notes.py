"""Warnings over a valid config: keys that do nothing in its context, and a run that trains on without a tracker.

A key that is accepted must change the run, be refused, or be named here with the reason it has no effect
(``tests/test_key_table.py`` holds every key to that). Printed by ``config validate``, returned by the server's
validate, logged by jobs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import attrs

from simpletuner_core.config.model import strip_dashes

#: Keys the tutorial uses that are accepted (so its configs load) but have no effect in this release yet.
NOT_YET = {
    "validation_noise_scheduler": "validation uses the model's own scheduler in this release",
}


#: ``report_to`` value -> (module, pip package) of the tracker it needs.
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
                    "comet": ("comet_ml", "comet-ml")}


def missing_tracker(report_to: str) -> str | None:
    """The pip package ``report_to`` needs when it is not installed, else None. A missing tracker is only a
    warning: like SimpleTuner, the run trains on without it rather than being refused."""
    tracker = TRACKER_PACKAGES.get(report_to)
    return tracker[1] if tracker and importlib.util.find_spec(tracker[0]) is None else None


def warnings_for(cfg: Any, raw: Mapping[str, Any] | None = None, registry: Any | None = None) -> list[str]:
    """Notes for keys set to a value that does nothing (yet, or for this family) or that is likely a mistake
    (printed by validate, logged by jobs); with ``raw`` (the config as given), also the SimpleTuner keys in it that
    have no effect here."""
    defaults = {a.name: a.default for a in attrs.fields(type(cfg))}
    out = []
    for key in sorted(NOT_YET):
        if getattr(cfg, key, None) != defaults.get(key):
            out.append(f"{key} is accepted but has no effect yet: {NOT_YET[key]}")
    if registry is None:
        from simpletuner_core.plugins import get_registry

        registry = get_registry()
    fam = registry.family(cfg.model_family) if cfg.model_family in registry.families else None
    if cfg.validation_guidance_rescale and fam is not None and "guidance_rescale" not in fam.features:
        out.append(f"validation_guidance_rescale has no effect for {fam.name}: its diffusers pipeline "
                   f"({fam.pipeline or 'none'}) takes no guidance_rescale argument")
    if cfg.lr_scheduler == "constant" and cfg.lr_warmup_steps > 0:
        out.append(f"lr_warmup_steps={cfg.lr_warmup_steps} has no effect with lr_scheduler=constant (it ignores "
                   "warm-up, as in SimpleTuner); use lr_scheduler=constant_with_warmup to warm up")
    out += _beta_notes(cfg)
    out += _lycoris_target_notes(cfg)
    out += _context_notes(cfg, registry, fam)
    if cfg.rescale_betas_zero_snr and cfg.prediction_type != "v_prediction":
        out.append("rescale_betas_zero_snr is meant for v-prediction (set prediction_type=v_prediction): with "
                   "ε-prediction the zero-SNR timestep's target is its input, so it teaches nothing")
    if (cfg.validation_prompt_library or cfg.user_prompt_library) and not cfg.validation_prompt:
        out.append("validation_prompt_library/user_prompt_library render only when validation runs, which needs "
                   "a validation_prompt")
    family = registry.families.canonical(cfg.model_family) if cfg.model_family in registry.families else None
    for field in registry.config_fields.values():
        if field.warn is not None and (not field.family or registry.families.canonical(field.family) == family):
            note = field.warn(cfg)
            if note:
                out.append(note)
    if cfg.gradient_checkpointing_interval is not None and not cfg.gradient_checkpointing:
        out.append("gradient_checkpointing_interval has no effect without gradient_checkpointing: true")
    package = missing_tracker(getattr(cfg, "report_to", "none"))
    if package:
        out.append(f"report_to={cfg.report_to} needs the `{package}` package (pip install {package}); "
                   "training will continue without that tracker")
    if raw is not None:
        out += given_without_switch(cfg, set(strip_dashes(raw)), defaults)
    return out + (inert_notes(cfg, raw) if raw is not None else [])


def _context_notes(cfg: Any, registry: Any, fam: Any) -> list[str]:
    """Keys set to ask for something this run's model_type, base precision or weights source cannot do."""
    defaults = {a.name: a.default for a in attrs.fields(type(cfg))}
    out = []
    if cfg.model_type != "lora" and cfg.lora_format != defaults["lora_format"]:
        out.append(f"lora_format={cfg.lora_format} has no effect with model_type={cfg.model_type}: a full "
                   "fine-tune saves the whole model in diffusers layout, not LoRA weights")
    if cfg.quantize_via != defaults["quantize_via"] and cfg.base_model_precision not in registry.quantizers:
        out.append(f"quantize_via={cfg.quantize_via} has no effect: base_model_precision="
                   f"{cfg.base_model_precision} is not a quantizer, so nothing is quantized")
    flavour = fam.flavours.get(cfg.model_flavour) if fam is not None and cfg.model_flavour else None
    path = cfg.pretrained_model_name_or_path
    if flavour is not None and flavour.hub_id and path and path != flavour.hub_id:
        extra = f"; the flavour still brings {', '.join(flavour.features)}" if flavour.features else ""
        out.append(f"model_flavour={cfg.model_flavour} does not choose the weights: pretrained_model_name_or_path "
                   f"({path}) is set and is what loads{extra}")
    return out + _adapter_notes(cfg) + _partner_notes(cfg, defaults)


def _partner_notes(cfg: Any, defaults: Mapping[str, Any]) -> list[str]:
    """Keys that only act once another key turns their feature on (their schedule, the external validation
    script, previews)."""
    out = []
    if cfg.validation_method != "external-script":
        out += [f"{key} has no effect with validation_method={cfg.validation_method}: only "
                "validation_method=external-script runs the script" for key in
                ("validation_external_script", "validation_external_background") if getattr(cfg, key) != defaults[key]]
    if cfg.lr_num_cycles != defaults["lr_num_cycles"] and cfg.lr_scheduler != "cosine_with_restarts":
        out.append(f"lr_num_cycles has no effect with lr_scheduler={cfg.lr_scheduler}: only cosine_with_restarts "
                   "reads it")
    if cfg.lr_power != defaults["lr_power"] and cfg.lr_scheduler != "polynomial":
        out.append(f"lr_power has no effect with lr_scheduler={cfg.lr_scheduler}: only polynomial reads it")
    if cfg.ema_decay != defaults["ema_decay"] and not cfg.use_ema:
        out.append("ema_decay has no effect without use_ema: true")
    if not cfg.validation_preview:
        out += [f"{key} has no effect without validation_preview: true" for key in
                ("validation_preview_steps", "validation_preview_decoder") if getattr(cfg, key) != defaults[key]]
    return out


def _adapter_notes(cfg: Any) -> list[str]:
    """LyCORIS keys on a peft LoRA, and LoRA dropout on the LyCORIS algorithms that implement none."""
    if cfg.model_type != "lora":
        return []  # adapter keys on a full run are refused by the rules
    if cfg.lora_type != "lycoris":
        return ["lycoris_config has no effect with lora_type=standard (a peft LoRA); set lora_type=lycoris to "
                "use it"] if cfg.lycoris_config else []
    from simpletuner_core.builtins.adapters import lycoris_settings

    try:
        algo = lycoris_settings(cfg)["algo"]
    except ValueError:
        return []  # reported by the rules
    if cfg.lora_dropout and algo in ("lokr", "loha"):
        return [f"lora_dropout has no effect with LyCORIS algo {algo}: LyCORIS implements no plain dropout for "
                "LoKr/LoHa; set rank_dropout or module_dropout in lycoris_config instead"]
    return []


def _lycoris_target_notes(cfg: Any) -> list[str]:
    """An ``apply_preset`` in lycoris_config says which modules LyCORIS adapts, so lora_target_modules cannot."""
    if not (cfg.model_type == "lora" and cfg.lora_type == "lycoris" and cfg.lora_target_modules
            and cfg.lycoris_config):
        return []
    from simpletuner_core.builtins.adapters import lycoris_settings

    try:
        preset = lycoris_settings(cfg).get("apply_preset")
    except ValueError:
        return []  # reported by the rules
    if preset is None:
        return []
    shown = preset if isinstance(preset, str) else "a dict"
    return [f"lora_target_modules has no effect: lycoris_config's apply_preset ({shown}) chooses the LyCORIS "
            "modules; remove one of the two"]


def _beta_notes(cfg: Any) -> list[str]:
    """Lion takes its betas from optimizer_beta1/2 or its own defaults, never from adam_beta1/2 (Adam's 0.999 is
    far from Lion's 0.99): a non-default adam_beta with Lion is named so the user moves it."""
    from simpletuner_core.builtins.optimizers import OWN_BETAS

    own = OWN_BETAS.get(cfg.optimizer)
    if own is None:
        return []
    defaults = {a.name: a.default for a in attrs.fields(type(cfg))}
    out = []
    for i, key in enumerate(("adam_beta1", "adam_beta2")):
        general = f"optimizer_beta{i + 1}"
        if getattr(cfg, key) != defaults[key] and getattr(cfg, general) is None:
            out.append(f"{key} has no effect with optimizer={cfg.optimizer}, which uses its own beta{i + 1} "
                       f"({own[i]:g}); set {general} to change it")
    return out


#: Keys that only matter once another setting is on, and the sentence that says which. Named only when the
#: config as given sets them (SimpleTuner's generated configs list every key, at its default or not).
VALIDATION_ONLY = ("validation_negative_prompt", "validation_guidance", "validation_resolution",
                   "validation_num_inference_steps", "validation_seed", "validation_step_interval",
                   "validation_epoch_interval", "validation_noise_scheduler")


def given_without_switch(cfg: Any, given: set[str], defaults: Mapping[str, Any]) -> list[str]:
    """Keys set in the config as given whose feature is off: validation settings without a validation_prompt,
    the multi-node rendezvous on one machine, a hub repository nothing uploads to."""
    def changed(key: str) -> bool:
        return key in given and getattr(cfg, key, None) != defaults.get(key)

    out = []
    if not cfg.validation_prompt or cfg.validation_disable:
        why = "validation_disable is set" if cfg.validation_disable else "no validation_prompt is set"
        out += [f"{key} has no effect: validation never runs ({why})" for key in VALIDATION_ONLY if changed(key)]
    if cfg.num_machines <= 1:
        out += [f"{key} has no effect with num_machines=1: it is the multi-node rendezvous" for key in
                ("main_process_ip", "main_process_port", "machine_rank") if changed(key)]
    if changed("hub_model_id") and not (cfg.push_to_hub or cfg.push_checkpoints_to_hub):
        out.append("hub_model_id has no effect without push_to_hub or push_checkpoints_to_hub: nothing is uploaded")
    return out


def inert_notes(cfg: Any, raw: Mapping[str, Any]) -> list[str]:
    """The SimpleTuner keys of ``raw`` (the config as given) that have no effect here, named once."""
    from simpletuner_core.config import compat
    from simpletuner_core.config.migrations import migrate

    return compat.notes(migrate(strip_dashes(raw)), [a.name for a in attrs.fields(type(cfg))])
