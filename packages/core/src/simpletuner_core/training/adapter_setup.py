"""The engine's adapter steps: apply it with the family's targets and presets, prove it can be exported, load
``init_lora``, and describe it (without a model) for the resume check.

Every failure here is the user's config, so it surfaces as :class:`ConfigInvalid` naming the key to change.
"""

from __future__ import annotations

import json
from typing import Any

from simpletuner_core.config.errors import ConfigError, ConfigInvalid


def presets_of(trainer: Any) -> dict[str, Any]:
    return dict(getattr(trainer, "lycoris_presets", {}))


def apply_adapter(cfg: Any, family: Any, trainer: Any, model: Any, registry: Any, *, fresh: bool,
                  log: Any) -> Any:
    """Add the configured adapter to ``model``; ``fresh`` (not resuming) also loads ``init_lora``."""
    try:
        adapter = registry.adapters.get(cfg.lora_type).apply(model, cfg, list(trainer.lora_targets),
                                                             presets_of(trainer))
    except ValueError as exc:  # an unknown preset, targets that match nothing: the config, not a crash
        raise ConfigInvalid([ConfigError(adapter_key(cfg), str(exc))]) from None
    if adapter.kind == "standard":  # a module the export format cannot name fails now, not after training
        fmt = registry.lora_formats.get(cfg.lora_format)
        try:
            fmt.convert(adapter.state_dict(), family, adapter.hyperparameters.get("alpha"))
        except ValueError as exc:
            raise ConfigInvalid([ConfigError("lora_format", str(exc))]) from None
    if cfg.init_lora and fresh:
        from simpletuner_core.training.lora_io import LoraFileError, load_init_lora

        try:
            fmt_name = load_init_lora(adapter, cfg.init_lora, family, registry)
        except LoraFileError as exc:
            raise ConfigInvalid([ConfigError("init_lora", str(exc))]) from None
        log(f"init_lora: loaded {cfg.init_lora} ({fmt_name} format)")
    return adapter


def adapter_key(cfg: Any) -> str:
    """The config key that shapes the adapter's modules: the LyCORIS file, or the LoRA target list."""
    if cfg.lora_type == "lycoris" and (cfg.lycoris_config or not cfg.lora_target_modules):
        return "lycoris_config"
    return "lora_target_modules"


def describe_adapter(cfg: Any, family: Any, registry: Any) -> dict[str, Any] | None:
    """What the adapter would be, from the config and the family's targets/presets (no model needed)."""
    if cfg.model_type != "lora" or cfg.lora_type not in registry.adapters:
        return None
    spec = registry.adapters.get(cfg.lora_type)
    if spec.describe is None:
        return None
    cls = family.trainer()
    targets = cls.targets_for(cfg) if hasattr(cls, "targets_for") else cls.lora_targets  # config-chosen presets
    try:
        return spec.describe(cfg, list(targets), presets_of(cls))
    except ValueError as exc:
        raise ConfigInvalid([ConfigError(adapter_key(cfg), str(exc))]) from None


def adapter_diff(saved: dict[str, Any] | None, now: dict[str, Any] | None) -> list[str]:
    """``adapter.<key>: checkpoint=… now=…`` for every adapter hyper-parameter that differs."""
    if saved is None and now is None:
        return []
    saved, now = dict(saved or {}), dict(now or {})
    norm = json.loads(json.dumps(now, default=str))  # the manifest went through JSON: compare like with like
    return [f"adapter.{k}: checkpoint={saved.get(k)!r} now={norm.get(k)!r}" for k in sorted(set(saved) | set(norm))
            if saved.get(k) != norm.get(k)]
