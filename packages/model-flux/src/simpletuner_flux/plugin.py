"""Flux / Flux Kontext family plugin. Light on purpose: torch and diffusers load only when training starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from simpletuner_core import hookimpl
from simpletuner_core.records import ConfigExample, ConfigField, Flavour, ModelFamily
from simpletuner_flux.lora_targets import PRESETS

LORA_TARGET_PRESETS = tuple(PRESETS)

KONTEXT = ("reference_conditioning",)


def _trainer() -> type:
    from simpletuner_flux.trainer import FluxTrainer

    return FluxTrainer


def _build_tiny(cache_dir: Path) -> Path:
    from simpletuner_flux.tiny import ensure_tiny_pipeline

    return ensure_tiny_pipeline(cache_dir, kontext=False)


def _build_tiny_kontext(cache_dir: Path) -> Path:
    from simpletuner_flux.tiny import ensure_tiny_pipeline

    return ensure_tiny_pipeline(cache_dir, kontext=True)


def _memory_shapes(flavour: str, config: Any = None) -> Any:
    from simpletuner_flux.shapes import architecture

    return architecture(flavour, config)


def _comfyui() -> Any:
    from simpletuner_flux.comfyui import comfyui_key_map

    return comfyui_key_map()


FLAVOURS = (
    Flavour("dev", "black-forest-labs/FLUX.1-dev", "FLUX.1 [dev], guidance-distilled (gated on the hub)."),
    Flavour("schnell", "black-forest-labs/FLUX.1-schnell", "FLUX.1 [schnell], timestep-distilled, no guidance."),
    Flavour("krea", "black-forest-labs/FLUX.1-Krea-dev", "FLUX.1 Krea [dev], an aesthetic dev fine-tune."),
    Flavour("kontext", "black-forest-labs/FLUX.1-Kontext-dev",
            "FLUX.1 Kontext [dev]: image editing from edit/reference pairs.", features=KONTEXT),
    Flavour("tiny", None, "Random-init miniature dev-style Flux built offline (CPU demos and tests).",
            build=_build_tiny),
    Flavour("tiny-kontext", None, "Random-init miniature Flux Kontext built offline (CPU demos and tests).",
            build=_build_tiny_kontext, features=KONTEXT),
)


#: The keys of :data:`simpletuner_flux.trainer.LYCORIS_PRESETS` (kept torch-free for the config rules; a test
#: keeps the two in step).
LYCORIS_PRESET_NAMES = ("attention", "default", "full")


@hookimpl
def register_model_families(register: Callable[[ModelFamily], None]) -> None:
    register(ModelFamily(
        name="flux",
        aliases=("flux1",),
        trainer=_trainer,
        flavours={f.name: f for f in FLAVOURS},
        model_types=("full", "lora"),
        adapter_types=("standard", "lycoris"),
        default_flavour="dev",
        description="Flux.1 (MMDiT, T5 + CLIP text encoders, rectified flow on packed latents; Kontext edits).",
        pipeline="FluxPipeline / FluxKontextPipeline",
        size_multiple=16,
        features=("clip_skip", "flow_matching"),
        lora_key_maps={"comfyui": _comfyui},
        lycoris_presets=LYCORIS_PRESET_NAMES,
        memory_shapes=_memory_shapes,
    ))


def _check_fused(key: str) -> Callable[[Any], str | None]:
    """Fused QKV with an adapter is refused: its weights would sit on ``to_qkv``/``to_added_qkv``, modules that a
    stock (unfused) Flux in diffusers or ComfyUI does not have, so the exported LoRA would load nowhere."""

    def check(cfg: Any) -> str | None:
        if getattr(cfg, key) and cfg.model_type == "lora":
            return ("fused QKV projections apply to full fine-tunes only (model_type=full): an adapter trained on "
                    "the fused to_qkv layers would not load into an unfused Flux; leave it off for LoRA/LyCORIS")
        return None

    return check


def _check_tread(cfg: Any) -> str | None:
    from simpletuner_flux.tread import check_config

    return check_config(cfg)


def _warn_lora_target(cfg: Any) -> str | None:
    if cfg.model_type != "lora" and cfg.flux_lora_target != "all":
        return (f"flux_lora_target={cfg.flux_lora_target} has no effect with model_type={cfg.model_type}: it picks "
                "the modules a LoRA adapts, and a full fine-tune trains every weight")
    if cfg.model_type == "lora" and cfg.lora_target_modules and cfg.flux_lora_target != "all":
        return (f"flux_lora_target={cfg.flux_lora_target} is ignored: lora_target_modules "
                f"({cfg.lora_target_modules}) is set and wins")
    return None


#: SimpleTuner's registry default of validation_negative_prompt (also ours): not a choice the user made.
DEFAULT_NEGATIVE = "blurry, cropped, ugly"


def _warn_negative_prompt(cfg: Any) -> str | None:
    negative = cfg.validation_negative_prompt
    if cfg.validation_guidance_real <= 1.0 and negative and negative != DEFAULT_NEGATIVE:
        return ("validation_negative_prompt has no effect for flux unless validation_guidance_real > 1 (true "
                "classifier-free guidance, e.g. 4.0; it doubles the validation sampler's cost)")
    return None


@hookimpl
def register_config_fields(register: Callable[[ConfigField], None]) -> None:
    register(ConfigField("flux_guidance_value", float, 1.0,
                         "Guidance embedding value during training (dev/Kontext have a guidance embedder).",
                         family="flux"))
    register(ConfigField("flux_sigma_sampling", str, "logit_normal",
                         "How training noise levels are drawn: logit_normal (SD3) or shifted uniform.",
                         choices=("logit_normal", "shifted"), family="flux"))
    register(ConfigField("flow_schedule_shift", float, 3.0,
                         "Shift applied to uniform noise levels when flux_sigma_sampling=shifted.", family="flux"))
    register(ConfigField("tread_config", Any, None,
                         'TREAD token routing while training: {"routes": [{"selection_ratio": 0.5, '
                         '"start_layer_idx": 2, "end_layer_idx": -2}]} (object or JSON text); see docs/flux.md.',
                         family="flux", check=_check_tread))
    register(ConfigField("fuse_qkv_projections", bool, False,
                         "Fuse each attention's Q/K/V projections into one matmul for training (full fine-tunes; "
                         "saved unfused).", family="flux", check=_check_fused("fuse_qkv_projections")))
    register(ConfigField("fused_qkv_projections", bool, False,
                         "Alias of fuse_qkv_projections (the name in SimpleTuner's field registry).",
                         family="flux", check=_check_fused("fused_qkv_projections")))
    register(ConfigField("validation_guidance_real", float, 1.0,
                         "True classifier-free guidance scale for validation with validation_negative_prompt "
                         "(the pipeline's true_cfg_scale); 1 = off.", family="flux", warn=_warn_negative_prompt))
    register(ConfigField("flux_lora_target", str, "all",
                         "Named LoRA target set when lora_target_modules is unset (module lists in docs/flux.md).",
                         choices=LORA_TARGET_PRESETS, family="flux", warn=_warn_lora_target))


@hookimpl
def register_config_examples(register: Callable[[ConfigExample], None]) -> None:
    from simpletuner_flux.examples import tiny_kontext_example

    register(tiny_kontext_example())
