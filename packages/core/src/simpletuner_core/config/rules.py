"""Semantic rules over a structured config: one source of truth for the CLI, the server and the trainer."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from simpletuner_core.config import compat
from simpletuner_core.config.errors import ConfigError, ConfigInvalid, suggest
from simpletuner_core.config.migrations import CURRENT_VERSION
from simpletuner_core.config.model import strip_dashes, structure
from simpletuner_core.config.notes import (
    NOT_YET,
    TRACKER_PACKAGES,
    inert_notes,
    missing_tracker,
    warnings_for,
)
from simpletuner_core.training import attention

__all__ = ["NOT_YET", "TRACKER_PACKAGES", "apply_family_defaults", "check", "inert_notes", "missing_tracker",
           "parse_resolution", "validate", "warnings_for"]  # the warnings are kept in config/notes.py

PLAIN_PRECISIONS = ("no_change", "fp32", "bf16", "fp16")
ADAPTER_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules", "lycoris_config", "init_lora")


def parse_resolution(text: str) -> list[tuple[int, int]]:
    """``"1024x768,512"`` → ``[(1024, 768), (512, 512)]`` (width, height)."""
    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        w, _, h = part.partition("x")
        width, height = int(w), int(h or w)
        if width <= 0 or height <= 0:
            raise ValueError(part)
        out.append((width, height))
    if not out:
        raise ValueError(text)
    return out


def _choices(cfg: Any) -> Iterable[ConfigError]:
    for a in attrs.fields(type(cfg)):
        choices = a.metadata.get("choices") or ()
        value = getattr(cfg, a.name)
        if choices and value not in choices:
            shown = [c for c in choices if c is not None]
            yield ConfigError(a.name, f"must be one of {', '.join(map(str, shown))}; got {value!r}",
                              suggest(str(value), [str(c) for c in shown]))


def _at_least(cfg: Any, minimums: Mapping[str, float]) -> Iterable[ConfigError]:
    for name, low in minimums.items():
        value = getattr(cfg, name)
        if value is not None and value < low:
            yield ConfigError(name, f"must be >= {low:g}; got {value!r}")


def _family(cfg: Any, registry: Any, provided: set[str]) -> Iterable[ConfigError]:
    if not cfg.model_family:
        yield ConfigError("model_family", "required: choose one of " + ", ".join(registry.families.names()))
        return
    if cfg.model_family not in registry.families:
        known = registry.families.names(with_aliases=True)
        yield ConfigError("model_family", f"unknown model family {cfg.model_family!r} (known: {', '.join(known)})",
                          suggest(cfg.model_family, known))
        return
    fam = registry.family(cfg.model_family)
    if cfg.model_flavour is not None and cfg.model_flavour not in fam.flavours:
        known = sorted(fam.flavours)
        yield ConfigError("model_flavour", f"unknown flavour {cfg.model_flavour!r} for {fam.name} "
                          f"(known: {', '.join(known) or 'none yet'})", suggest(cfg.model_flavour, known))
    if cfg.model_flavour is None and not cfg.pretrained_model_name_or_path and fam.default_flavour is None:
        yield ConfigError("model_flavour", "set model_flavour or pretrained_model_name_or_path")
    if cfg.model_type not in fam.model_types:
        yield ConfigError("model_type", f"{fam.name} supports model_type {', '.join(fam.model_types)}")
    if cfg.model_type == "lora" and cfg.lora_type in registry.adapters and cfg.lora_type not in fam.adapter_types:
        yield ConfigError("lora_type", f"{fam.name} supports lora_type {', '.join(fam.adapter_types)}")
    if cfg.validation_resolution:
        try:
            sizes = parse_resolution(cfg.validation_resolution)
        except ValueError:
            sizes = []  # reported by _misc
        bad = [f"{w}x{h}" for w, h in sizes if w % fam.size_multiple or h % fam.size_multiple]
        if bad:
            yield ConfigError("validation_resolution", f"{', '.join(bad)} is not a multiple of "
                              f"{fam.size_multiple} px, which {fam.name} needs")
    if cfg.model_type == "lora" and cfg.lora_format in registry.lora_formats:
        spec = registry.lora_formats.get(cfg.lora_format)
        if spec.needs_key_map and cfg.lora_format not in fam.lora_key_maps:
            yield ConfigError("lora_format", f"{fam.name} has no {cfg.lora_format} key map; use "
                              f"{', '.join(['diffusers', *sorted(fam.lora_key_maps)])}")
    yield from _lycoris_preset(cfg, fam)
    if "clip_skip" not in fam.features and cfg.clip_skip:
        yield ConfigError("clip_skip", f"{fam.name} has no CLIP text encoder, so clip_skip cannot apply; remove it")
    yield from _noise_schedule_keys(cfg, fam)
    for field in registry.config_fields.values():  # saved configs list every key: only a set value is a mistake
        if (field.family and field.name in provided and registry.families.canonical(field.family) != fam.name
                and getattr(cfg, field.name, field.default) != field.default
                and not compat.is_off(compat.peer_keys().get(field.name), getattr(cfg, field.name, None))):
            yield ConfigError(field.name, f"applies only to model_family {field.family}")
        elif field.check is not None and (not field.family or registry.families.canonical(field.family) == fam.name):
            message = field.check(cfg)
            if message:
                yield ConfigError(field.name, message)


#: Keys that change a DDPM noise schedule's loss or betas, and the family feature that honours each.
SCHEDULE_KEYS = {"snr_gamma": "snr_gamma", "use_soft_min_snr": "snr_gamma",
                 "rescale_betas_zero_snr": "rescale_betas_zero_snr"}


def _noise_schedule_keys(cfg: Any, fam: Any) -> Iterable[ConfigError]:
    """Refused, by name, for families without a DDPM schedule (flow matching) when set to do something."""
    flow = "flow_matching" in fam.features
    if cfg.prediction_type is not None and (cfg.prediction_type == "flow_matching") != flow:
        target = "flow matching (its only target: leave prediction_type unset or flow_matching)" if flow else \
            "a DDPM noise schedule (epsilon or v_prediction)"
        yield ConfigError("prediction_type", f"{fam.name} trains with {target}, so prediction_type="
                          f"{cfg.prediction_type} cannot apply")
    for key, feature in SCHEDULE_KEYS.items():
        if getattr(cfg, key) and feature not in fam.features:
            yield ConfigError(key, f"{fam.name} does not train on a DDPM noise schedule (ε/v-prediction), so "
                              f"{key} cannot apply; remove it")


def _lycoris_preset(cfg: Any, fam: Any) -> Iterable[ConfigError]:
    """A preset *name* in ``lycoris_config`` must be one of the family's (a dict preset is LyCORIS' own form)."""
    if not (cfg.model_type == "lora" and cfg.lora_type == "lycoris" and cfg.lycoris_config and fam.lycoris_presets):
        return
    from simpletuner_core.builtins.adapters import lycoris_settings

    try:
        preset = lycoris_settings(cfg).get("apply_preset")
    except ValueError:
        return  # unreadable file or bad algo: reported by _misc
    if isinstance(preset, str) and preset not in fam.lycoris_presets:
        known = sorted(fam.lycoris_presets)
        yield ConfigError("lycoris_config", f"apply_preset {preset!r} is not a {fam.name} LyCORIS preset "
                          f"(known: {', '.join(known)})", suggest(preset, known))


def _schedule(cfg: Any) -> Iterable[ConfigError]:
    steps, epochs = cfg.max_train_steps, cfg.num_train_epochs
    if steps < 0 or epochs < 0:
        yield ConfigError("max_train_steps" if steps < 0 else "num_train_epochs", "must not be negative")
    elif (steps > 0) == (epochs > 0):
        yield ConfigError("max_train_steps", "set exactly one of max_train_steps and num_train_epochs above 0 "
                          f"(got max_train_steps={steps}, num_train_epochs={epochs})")


def _components(cfg: Any, registry: Any, provided: set[str]) -> Iterable[ConfigError]:
    for key, table in (("optimizer", registry.optimizers), ("lr_scheduler", registry.schedulers),
                       ("validation_method", registry.validation_methods), ("lora_format", registry.lora_formats)):
        value = getattr(cfg, key)
        if value not in table:
            yield ConfigError(key, f"unknown {key} {value!r} (known: {', '.join(table.names())})",
                              suggest(str(value), table.names()))
    if cfg.optimizer in registry.optimizers:
        reason = registry.optimizers.get(cfg.optimizer).unavailable()
        if reason:
            yield ConfigError("optimizer", f"optimizer {cfg.optimizer!r} {reason}")
    if cfg.base_model_precision not in PLAIN_PRECISIONS and cfg.base_model_precision not in registry.quantizers:
        known = [*PLAIN_PRECISIONS, *registry.quantizers.names()]
        yield ConfigError("base_model_precision", f"unknown precision {cfg.base_model_precision!r} "
                          f"(known: {', '.join(known)})", suggest(cfg.base_model_precision, known))
    if cfg.base_model_precision in registry.quantizers and cfg.model_type != "lora":
        yield ConfigError("base_model_precision", f"a {cfg.base_model_precision} base is frozen: train an adapter "
                          "on it with model_type=lora, or use no_change/bf16 for a full fine-tune")
    if cfg.model_type == "lora" and cfg.lora_type not in registry.adapters:
        known = registry.adapters.names()
        yield ConfigError("lora_type", f"unknown lora_type {cfg.lora_type!r} (known: {', '.join(known)})",
                          suggest(cfg.lora_type, known))
    if cfg.model_type == "full":  # a saved config lists every key; only non-default adapter values are a mistake
        defaults = {a.name: a.default for a in attrs.fields(type(cfg))}
        peer = compat.peer_keys()
        for key in sorted(provided & {*ADAPTER_KEYS, "lora_type"}):
            value = getattr(cfg, key)  # SimpleTuner's generated configs carry its LoRA defaults on full runs too
            if value != defaults[key] and not compat.is_off(peer.get(key), value):
                yield ConfigError(key, "only applies with model_type=lora")


def _misc(cfg: Any) -> Iterable[ConfigError]:
    if cfg.config_version > CURRENT_VERSION:
        yield ConfigError("config_version", f"version {cfg.config_version} is newer than this release "
                          f"understands ({CURRENT_VERSION}); upgrade simpletuner-core")
    for key in ("output_dir", "data_backend_config"):
        if not getattr(cfg, key):
            yield ConfigError(key, "required")
    if cfg.validation_resolution:
        try:
            parse_resolution(cfg.validation_resolution)
        except ValueError:
            yield ConfigError("validation_resolution", f"expected WxH or an edge length, got "
                              f"{cfg.validation_resolution!r}")
    if not 0.0 <= cfg.lora_dropout < 1.0:
        yield ConfigError("lora_dropout", "must be in [0, 1)")
    if not 0.0 <= cfg.caption_dropout_probability <= 1.0:
        yield ConfigError("caption_dropout_probability", "must be in [0, 1]")
    for key in ("adam_beta1", "adam_beta2", "optimizer_beta1", "optimizer_beta2"):
        if getattr(cfg, key) is not None and not 0.0 <= getattr(cfg, key) < 1.0:
            yield ConfigError(key, "must be in [0, 1)")
    if cfg.model_type == "lora" and cfg.lora_type == "lycoris" and cfg.lycoris_config:
        from pathlib import Path

        if not Path(cfg.lycoris_config).expanduser().is_file():
            yield ConfigError("lycoris_config", f"file not found: {cfg.lycoris_config}")
        else:
            from simpletuner_core.builtins.adapters import lycoris_settings

            try:
                lycoris_settings(cfg)
            except ValueError as exc:
                yield ConfigError("lycoris_config", str(exc))
    if cfg.model_type == "lora" and cfg.init_lora:
        from pathlib import Path

        if not Path(cfg.init_lora).expanduser().is_file():
            yield ConfigError("init_lora", f"file not found: {cfg.init_lora}")
    yield from _loss_and_validation_keys(cfg)
    if not 0.0 < cfg.ema_decay < 1.0:
        yield ConfigError("ema_decay", "must be in (0, 1)")
    if cfg.learning_rate <= 0:
        yield ConfigError("learning_rate", "must be > 0")
    yield from _buckets(cfg)


def _buckets(cfg: Any) -> Iterable[ConfigError]:
    rounding = cfg.aspect_bucket_rounding
    if rounding is not None and not 1 <= rounding <= 9:
        yield ConfigError("aspect_bucket_rounding", f"must be 1 to 9 (decimal places of the aspect ratio); got "
                          f"{rounding!r}")
    if cfg.minimum_image_size is not None and cfg.minimum_image_size < 0:
        yield ConfigError("minimum_image_size", f"must be >= 0 (0 = no minimum); got {cfg.minimum_image_size:g}")


def _loss_and_validation_keys(cfg: Any) -> Iterable[ConfigError]:
    if cfg.snr_gamma is not None and cfg.snr_gamma < 0:
        yield ConfigError("snr_gamma", f"must be > 0 (unset or 0 = off); got {cfg.snr_gamma!r}")
    if cfg.use_soft_min_snr and not cfg.snr_gamma:
        yield ConfigError("use_soft_min_snr", "needs snr_gamma (the γ the soft minimum clips the SNR at), e.g. 5")
    if not 0.0 <= cfg.validation_guidance_rescale <= 1.0:
        yield ConfigError("validation_guidance_rescale", f"must be in [0, 1]; got {cfg.validation_guidance_rescale!r}")
    if cfg.user_prompt_library:
        from simpletuner_core.training.validation import load_prompt_library

        try:
            load_prompt_library(cfg.user_prompt_library)
        except ValueError as exc:
            yield ConfigError("user_prompt_library", str(exc))


def _hooks(cfg: Any) -> Iterable[ConfigError]:
    from simpletuner_core.hooks.scripts import check_command

    keys = [a.name for a in attrs.fields(type(cfg))]
    for key in ("post_checkpoint_script", "post_upload_script", "validation_external_script"):
        command = getattr(cfg, key)
        if command:
            problem = check_command(command, keys)
            if problem:
                yield ConfigError(key, problem)
    if cfg.validation_method == "external-script" and not cfg.validation_external_script:
        yield ConfigError("validation_external_script", "required with validation_method=external-script")
    if cfg.push_to_hub and not cfg.hub_model_id:
        yield ConfigError("hub_model_id", "required with push_to_hub (e.g. your-name/my-lora)")
    if cfg.push_to_hub and importlib.util.find_spec("huggingface_hub") is None:
        yield ConfigError("push_to_hub", "needs the `huggingface_hub` package (pip install huggingface_hub)")
    if cfg.hook_script_timeout <= 0:
        yield ConfigError("hook_script_timeout", "must be > 0 seconds")
    if cfg.publish_local_dir and not os.path.isabs(os.path.expanduser(str(cfg.publish_local_dir))):
        yield ConfigError("publish_local_dir", "must be an absolute path (a relative one would depend on the "
                          "directory the trainer happens to run in)")
    if cfg.publish_timeout < 0:
        yield ConfigError("publish_timeout", "must be >= 0 seconds (0 = no limit)")
    if cfg.webhook_reporting_interval is not None and cfg.webhook_reporting_interval < 0:
        yield ConfigError("webhook_reporting_interval", "must be >= 0 seconds")


def _engine(cfg: Any) -> Iterable[ConfigError]:
    """Cadence, evaluation, cache and multi-node keys."""
    yield from _at_least(cfg, {"checkpoint_epoch_interval": 0, "validation_epoch_interval": 0,
                               "eval_steps_interval": 0, "eval_epoch_interval": 0, "gradient_checkpointing_interval": 1,
                               "num_eval_images": 1, "eval_timesteps": 1, "vae_batch_size": 1, "num_machines": 1})
    if cfg.num_machines >= 1 and not 0 <= cfg.machine_rank < cfg.num_machines:
        yield ConfigError("machine_rank", f"must be in [0, num_machines) = [0, {cfg.num_machines}); "
                          f"got {cfg.machine_rank}")
    if not 1 <= cfg.main_process_port <= 65535:
        yield ConfigError("main_process_port", f"must be a TCP port in 1..65535; got {cfg.main_process_port}")
    if cfg.num_machines > 1 and not str(cfg.main_process_ip or "").strip():
        yield ConfigError("main_process_ip", "required with num_machines > 1: the rank-0 machine's address")


def check(cfg: Any, registry: Any, provided: Iterable[str] = ()) -> list[ConfigError]:
    """Every semantic problem of ``cfg``; ``provided`` are the keys the user set explicitly."""
    given = set(provided)
    errors: list[ConfigError] = []
    errors += _choices(cfg)
    errors += _at_least(cfg, {"train_batch_size": 1, "gradient_accumulation_steps": 1, "lr_warmup_steps": 0,
                              "checkpoint_step_interval": 0, "checkpoints_total_limit": 1, "validation_step_interval": 0,
                              "lora_rank": 1, "validation_num_inference_steps": 1, "lr_num_cycles": 1,
                              "max_grad_norm": 0, "clip_skip": 0, "validation_preview_steps": 1,
                              "num_processes": 1})
    errors += _family(cfg, registry, given)
    errors += _schedule(cfg)
    errors += _components(cfg, registry, given)
    errors += _misc(cfg)
    errors += _hooks(cfg)
    errors += attention.config_errors(cfg)
    errors += _engine(cfg)
    return errors


def apply_family_defaults(raw: Mapping[str, Any], registry: Any) -> dict[str, Any]:
    """Family defaults go under the user's values (bare keys in, bare keys out)."""
    data = strip_dashes(raw)
    family = data.get("model_family")
    if isinstance(family, str) and family in registry.families:
        return {**registry.family(family).defaults, **data}
    return data


def validate(raw: Mapping[str, Any], registry: Any | None = None) -> Any:
    """Structure + rules; returns the typed config or raises :class:`ConfigInvalid` listing every error."""
    if registry is None:
        from simpletuner_core.plugins import get_registry

        registry = get_registry()
    if not isinstance(raw, Mapping):
        raise ConfigInvalid([ConfigError("config", f"expected a JSON object, got {type(raw).__name__}")])
    data = apply_family_defaults(raw, registry)
    provided = set(strip_dashes(raw))
    try:
        cfg = structure(data, registry)
    except ConfigInvalid as exc:
        # Report the rules too, judged without the broken keys, so the user sees every problem in one go.
        broken = {e.path.split(".")[0] for e in exc.errors}
        try:
            rest = structure({k: v for k, v in data.items() if k not in broken}, registry)
        except ConfigInvalid:
            raise exc from None
        extra = [e for e in check(rest, registry, provided - broken) if e.path not in broken]
        raise ConfigInvalid([*exc.errors, *extra]) from None
    errors = check(cfg, registry, provided)
    if errors:
        raise ConfigInvalid(errors)
    return cfg
