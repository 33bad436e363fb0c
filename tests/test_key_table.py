"""No config key is accepted and then ignored: one table over every key of the config model.

For each key × context (family, model_type, lora_type) the key is flipped from its default to a value that asks
for something. Then exactly one of three things must hold: the validator refuses it by name; ``warnings_for``
names it (it has no effect here, and says why); or a fingerprint of what the key acts on differs from the
context's baseline (the dataset plan, the LR curve, a 2-step run's losses and weights, the validation pixels,
the trainer's launch argv, the files a run writes). A key with none of these is "accepted and ignored".

The key list comes from the config model with the plugins loaded, so a new key without a row fails here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attrs
import pytest

from simpletuner_core.config import ConfigInvalid, to_wire, validate, warnings_for
from simpletuner_core.config.migrations import overlay
from simpletuner_core.config.model import config_class
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import TEST_PINS  # the monorepo root conftest

KINDS = ("refused", "warned", "plan", "lr", "train", "eval", "validation", "launch", "files", "covered")
LR_STEPS = 20


@dataclass(frozen=True)
class Flip:
    """``value`` (or ``value(world, context)``) asks for something; ``kind`` says what observes it.

    ``base`` is set in the baseline and the flipped run alike (e.g. checkpoints on, to observe their limit);
    ``also`` goes with the flip only (a key that needs a partner to be meaningful). ``covered`` names the test
    that observes a behaviour this table cannot (servers, hubs, hook scripts, speed-only switches)."""

    value: Any
    kind: str
    base: dict[str, Any] = field(default_factory=dict)
    also: dict[str, Any] = field(default_factory=dict)
    covered: str = ""


def _ckpt(**base: Any) -> dict[str, Any]:
    return {"checkpoint_step_interval": 1, **base}


#: Every key of the config model: the flip and what observes it.
FLIPS: dict[str, Flip] = {
    # --- model ---
    "config_version": Flip(99, "refused"),
    "model_family": Flip(lambda w, c: w.other_family(c), "train",
                         also={"pretrained_model_name_or_path": lambda w, c: w.other_model_dir(c)}),
    "model_flavour": Flip(lambda w, c: w.other_flavour(c), "train"),
    "model_type": Flip(lambda w, c: "full" if c.model_type == "lora" else "lora", "train"),
    "lora_type": Flip(lambda w, c: "standard" if c.lora_type == "lycoris" else "lycoris", "train"),
    "pretrained_model_name_or_path": Flip(lambda w, c: w.perturbed_model_dir(c), "train"),
    "prediction_type": Flip("v_prediction", "train"),
    "tokenizer_max_length": Flip(6, "train"),
    # --- data ---
    "data_backend_config": Flip(lambda w, c: w.filename_captions_dataloader(c), "plan"),
    "resolution": Flip(32.0, "plan"),
    "resolution_type": Flip("pixel", "plan", base={"crop": False, "images": "wide"}),
    "cache_dir_vae": Flip(lambda w, c: str(c.home / "elsewhere" / "vae"), "files"),
    "cache_dir_text": Flip(lambda w, c: str(c.home / "elsewhere" / "text"), "files"),
    "caption_strategy": Flip("filename", "plan"),
    "instance_prompt": Flip("a photo of sks", "plan", base={"caption_strategy": "instanceprompt",
                                                            "instance_prompt": "a photo"}),
    "caption_dropout_probability": Flip(0.9, "train"),
    "vae_batch_size": Flip(1, "covered", covered="packages/model-pixart/tests/test_engine_keys.py::"
                                                  "test_vae_batch_size_sets_encoder_batches_and_keeps_latents"),
    "vae_cache_ondemand": Flip(True, "files"),
    "minimum_image_size": Flip(48, "plan", base={"resolution_type": "pixel"}, also={"resolution": 40}),
    "disable_bucket_pruning": Flip(True, "plan", base={"train_batch_size": 4}),
    "aspect_bucket_rounding": Flip(1, "plan", base={"crop": False, "images": "wide", "resolution": 256}),
    "dataloader_prefetch": Flip(True, "covered", covered="packages/model-pixart/tests/test_training.py::"
                                "test_prefetch_and_gradient_checkpointing_do_not_change_the_numbers"),
    "conditioning_multidataset_sampling": Flip("combined", "covered", covered="packages/model-flux/tests/"
                                               "test_kontext.py::test_two_reference_sets_combined_or_random"),
    # --- output ---
    "output_dir": Flip(lambda w, c: str(c.home / "elsewhere" / "output"), "files"),
    "lora_format": Flip("comfyui", "files"),
    # --- schedule ---
    "train_batch_size": Flip(1, "train"),
    "gradient_accumulation_steps": Flip(2, "train"),
    "max_train_steps": Flip(3, "train"),
    "num_train_epochs": Flip(2, "train", also={"max_train_steps": 0}),
    "num_machines": Flip(2, "launch"),
    "machine_rank": Flip(1, "launch", base={"num_machines": 2}),
    "main_process_ip": Flip("10.1.2.3", "launch", base={"num_machines": 2}),
    "main_process_port": Flip(29600, "launch", base={"num_machines": 2}),
    "seed": Flip(8, "train"),
    # --- optimisation ---
    "learning_rate": Flip(3e-3, "lr"),
    "optimizer": Flip("optimi-lion", "lr"),
    "lr_scheduler": Flip("cosine", "lr"),
    "lr_warmup_steps": Flip(5, "lr", base={"lr_scheduler": "constant_with_warmup"}),
    "lr_num_cycles": Flip(3, "lr", base={"lr_scheduler": "cosine_with_restarts"}),
    "lr_power": Flip(2.0, "lr", base={"lr_scheduler": "polynomial"}),
    "adam_beta1": Flip(0.5, "lr"),
    "adam_beta2": Flip(0.5, "lr"),
    "optimizer_beta1": Flip(0.5, "lr"),
    "optimizer_beta2": Flip(0.5, "lr"),
    "adam_weight_decay": Flip(0.5, "lr"),
    "adam_epsilon": Flip(1.0, "lr"),
    "max_grad_norm": Flip(1e-4, "train"),
    "grad_clip_method": Flip("value", "train", base={"max_grad_norm": 1e-3}),
    "mixed_precision": Flip("bf16", "train"),
    "base_model_precision": Flip("bf16", "train"),
    "quantize_via": Flip("cpu", "covered", base={"base_model_precision": "int8-quanto"},
                         covered="packages/core/tests/test_key_effects.py::"
                                 "test_quantize_via_decides_where_quantization_runs"),
    "gradient_checkpointing": Flip(True, "covered", covered="packages/model-pixart/tests/test_key_effects.py::"
                                   "test_gradient_checkpointing_recomputes_blocks_in_backward"),
    "gradient_checkpointing_interval": Flip(2, "covered", base={"gradient_checkpointing": True},
                                            covered="packages/model-pixart/tests/test_key_effects.py::"
                                                    "test_gradient_checkpointing_recomputes_blocks_in_backward"),
    "attention_mechanism": Flip("xformers", "covered", covered="packages/model-flux/tests/test_flux_speedups.py::"
                                "test_attention_mechanism_reaches_the_processors"),
    "use_ema": Flip(True, "files"),
    "ema_decay": Flip(0.5, "files", base={"use_ema": True}),
    "noise_offset": Flip(0.5, "train"),
    "snr_gamma": Flip(1.0, "train"),
    "use_soft_min_snr": Flip(True, "train", base={"snr_gamma": 1.0}),
    "rescale_betas_zero_snr": Flip(True, "train", base={"prediction_type": "v_prediction"}),
    # --- adapters ---
    "lora_rank": Flip(2, "train"),
    "lora_alpha": Flip(8.0, "train"),
    "lora_dropout": Flip(0.5, "train"),
    "lora_target_modules": Flip("to_q", "train"),
    "lycoris_config": Flip(lambda w, c: w.lycoris_file(), "train"),
    "init_lora": Flip(lambda w, c: w.adapter_file(c), "train"),
    # --- checkpoints ---
    "checkpoint_step_interval": Flip(1, "files"),
    "checkpoint_epoch_interval": Flip(1, "files", base={"max_train_steps": 3}),  # epoch 1 ends at step 2
    "checkpoints_total_limit": Flip(1, "files", base=_ckpt(max_train_steps=3)),
    "resume_from_checkpoint": Flip("latest", "covered", covered="tests/test_resume_exact.py::"
                                   "test_kill_9_then_resume_reproduces_the_uninterrupted_run"),
    # --- validation ---
    "validation_step_interval": Flip(1, "validation"),
    "validation_epoch_interval": Flip(1, "validation", base={"max_train_steps": 3, "validation_step_interval": 3}),
    "validation_prompt": Flip("a blue circle", "validation"),
    "validation_negative_prompt": Flip("a red square", "validation"),
    "validation_guidance": Flip(9.0, "validation"),
    "validation_resolution": Flip("32", "validation"),
    "validation_num_inference_steps": Flip(1, "validation"),
    "validation_seed": Flip(99, "validation"),
    "validation_disable": Flip(True, "validation"),
    "validation_guidance_rescale": Flip(0.7, "validation"),
    "validation_disable_unconditional": Flip(True, "validation"),
    "validation_prompt_library": Flip(True, "validation"),
    "user_prompt_library": Flip(lambda w, c: w.prompt_library(), "validation"),
    "disable_benchmark": Flip(False, "validation"),
    "num_eval_images": Flip(1, "eval"),
    "eval_dataset_id": Flip("held-out-b", "eval"),
    "eval_steps_interval": Flip(1, "eval"),
    "eval_epoch_interval": Flip(1, "eval", base={"eval_steps_interval": 3, "max_train_steps": 3}),
    "eval_loss_disable": Flip(True, "eval"),
    "eval_timesteps": Flip(3, "eval"),
    "validation_method": Flip("external-script", "validation",
                              also={"validation_external_script": "true"}),
    "validation_noise_scheduler": Flip("euler", "validation"),
    "validation_external_script": Flip("true", "covered", covered="tests/test_hooks_training.py::"
                                       "test_external_validation_and_post_checkpoint_scripts_get_the_right_values"),
    "validation_external_background": Flip(True, "covered", covered="packages/model-pixart/tests/"
                                           "test_key_effects.py::test_validation_external_background_does_not_hold_"
                                           "training"),
    "validation_preview": Flip(True, "covered", covered="packages/model-pixart/tests/test_training.py::"
                               "test_validation_previews_decode_intermediate_latents"),
    "validation_preview_steps": Flip(2, "covered", covered="packages/model-pixart/tests/test_training.py::"
                                     "test_validation_previews_decode_intermediate_latents"),
    "validation_preview_decoder": Flip("madebyollin/taesd", "covered", covered="packages/model-pixart/tests/"
                                       "test_training.py::test_validation_previews_decode_intermediate_latents"),
    "post_checkpoint_script": Flip("true", "covered", covered="tests/test_hooks_training.py::"
                                   "test_external_validation_and_post_checkpoint_scripts_get_the_right_values"),
    "post_upload_script": Flip("true", "covered", covered="packages/core/tests/test_hooks.py::"
                               "test_local_publishing_runs_in_the_background_then_the_upload_hook"),
    "hook_script_timeout": Flip(1.0, "covered", covered="packages/core/tests/test_hooks.py::"
                                "test_a_hanging_script_and_its_children_are_killed_at_the_timeout"),
    "hook_script_fatal": Flip(True, "covered", covered="tests/test_hooks_training.py::"
                              "test_a_failing_external_validation_fails_the_job_only_when_fatal"),
    # --- tracking and publishing ---
    "report_to": Flip("tensorboard", "covered", covered="packages/model-pixart/tests/test_training.py::"
                      "test_tensorboard_tracker_and_loss_plot"),
    "tracker_project_name": Flip("other", "covered", covered="packages/model-pixart/tests/test_training.py::"
                                 "test_tensorboard_tracker_and_loss_plot"),
    "tracker_run_name": Flip("run-b", "covered", covered="tests/test_hooks_training.py::"
                             "test_external_validation_and_post_checkpoint_scripts_get_the_right_values"),
    "webhook_config": Flip({"webhook_type": "raw", "callback_url": "http://127.0.0.1:9/hook"}, "covered",
                           covered="tests/test_webhooks_e2e.py::test_a_receiver_records_the_whole_run"),
    "webhook_reporting_interval": Flip(5.0, "covered", covered="packages/webhooks/tests/test_delivery.py::"
                                       "test_reporting_interval_throttles_status_but_keeps_the_last_step"),
    "webhook_restricted": Flip(True, "covered", covered="packages/webhooks/tests/test_guard.py::"
                               "test_make_sink_follows_the_jobs_flag"),
    "push_to_hub": Flip(True, "covered", also={"hub_model_id": "someone/tiny"},
                        covered="packages/core/tests/test_hub_publish.py::"
                                "test_checkpoints_and_final_model_reach_the_hub_api"),
    "push_checkpoints_to_hub": Flip(True, "covered", covered="packages/core/tests/test_hooks.py::"
                                    "test_local_publishing_runs_in_the_background_then_the_upload_hook"),
    "hub_model_id": Flip("someone/tiny", "covered", covered="packages/core/tests/test_hub_publish.py::"
                         "test_checkpoints_and_final_model_reach_the_hub_api"),
    "model_card_private": Flip(False, "covered", covered="packages/core/tests/test_model_card_keys.py::"
                               "test_the_repo_is_created_with_model_card_private"),
    "model_card_note": Flip("hello", "covered", covered="packages/core/tests/test_model_card_keys.py::"
                            "test_the_uploaded_card_starts_with_model_card_note"),
    "publish_timeout": Flip(1.0, "covered", covered="packages/core/tests/test_hooks.py::"
                            "test_each_upload_is_bounded_by_publish_timeout"),
    "publish_local_dir": Flip(lambda w, c: str(c.home / "published"), "files"),
    # --- processes ---
    "num_processes": Flip(2, "launch"),
    "accelerate_config": Flip(lambda w, c: w.accelerate_file(), "launch", base={"num_processes": 2}),
    "clip_skip": Flip(1, "train"),
    # --- flux ---
    "flow_schedule_shift": Flip(1.0, "train", base={"flux_sigma_sampling": "shifted"}),
    "flux_guidance_value": Flip(3.0, "train"),
    "flux_lora_target": Flip("context", "train"),
    "flux_sigma_sampling": Flip("shifted", "train"),
    "fuse_qkv_projections": Flip(True, "covered", covered="packages/model-flux/tests/test_flux_speedups.py::"
                                 "test_fused_qkv_gives_the_same_output"),
    "fused_qkv_projections": Flip(True, "covered", covered="packages/model-flux/tests/test_flux_speedups.py::"
                                  "test_fused_qkv_gives_the_same_output"),
    "tread_config": Flip({"routes": [{"selection_ratio": 0.5, "start_layer_idx": 1, "end_layer_idx": -1}]},
                         "train"),
    "validation_guidance_real": Flip(3.0, "validation"),
}

#: Keys that act only once a partner key turns their feature on: with the partner off (the contexts' default)
#: the flip alone must be named by a warning, besides what its row observes with the partner on.
NEEDS_PARTNER = {"validation_external_script": "validation_method", "validation_external_background":
                 "validation_method", "validation_preview_steps": "validation_preview",
                 "validation_preview_decoder": "validation_preview", "lr_num_cycles": "lr_scheduler",
                 "lr_power": "lr_scheduler", "ema_decay": "use_ema"}

#: NEEDS_PARTNER keys still accepted silently with their partner off; each is asserted to still be a gap.
PARTNER_GAPS: dict[str, str] = {}

#: (key, context) pairs known to be accepted and ignored; each is asserted to still be a gap, so it flips red
#: (and must be removed here) once fixed.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Context:
    name: str
    family: str  # "pixart" | "flux"
    model_type: str
    lora_type: str
    home: Path


CONTEXTS = {
    "pixart-full": ("pixart", "full", "standard"),
    "pixart-lora": ("pixart", "lora", "standard"),
    "pixart-lycoris": ("pixart", "lora", "lycoris"),
    "flux-lora": ("flux", "lora", "standard"),
    "flux-full": ("flux", "full", "standard"),
}

#: The tests' pinned defaults, less the pins of keys that only act with a partner (they would warn in every row).
PINS = {k: v for k, v in TEST_PINS.items() if k not in ("--ema_decay", "--lr_power")}

#: The setting every ``eval`` row starts from: two held-out datasets, the eval loss at the last step.
EVAL = {"eval": True, "eval_steps_interval": 2, "eval_timesteps": 2}

VALIDATION = {"validation_prompt": "a red square", "validation_num_inference_steps": 2,
              "validation_step_interval": 2, "validation_resolution": "64"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class World:
    """The tiny models, the images and one home per context, shared by every row of this module."""

    def __init__(self, root: Path) -> None:
        from simpletuner_core.demo_data import write_demo_dataset
        from simpletuner_flux.tiny import ensure_tiny_pipeline as tiny_flux
        from simpletuner_pixart.tiny import ensure_tiny_pipeline as tiny_pixart

        self.root = root
        self.models = {"pixart": tiny_pixart(root / "pixart"), "flux": tiny_flux(root / "flux")}
        self.images = root / "images"
        write_demo_dataset(self.images, count=5, size=64)
        self._made: dict[str, Any] = {}

    # -- configs --
    def wide_images(self) -> Path:
        """Three 64×44 images (aspect 1.45: a bucket that rounding to 1 decimal moves)."""
        def make() -> Path:
            from PIL import Image

            target = self.root / "wide"
            target.mkdir()
            for i, colour in enumerate(("red", "green", "blue")):
                Image.new("RGB", (64, 44), colour).save(target / f"wide-{i}.png")
                (target / f"wide-{i}.txt").write_text(f"a {colour} rectangle")
            return target

        return self._once("wide", make)

    def eval_images(self) -> Path:
        def make() -> Path:
            from simpletuner_core.demo_data import write_demo_dataset

            target = self.root / "held-out"
            write_demo_dataset(target, count=3, size=64)
            return target

        return self._once("held-out", make)

    def dataloader(self, home: Path, name: str = "dataloader.json", images: Path | None = None,
                   held_out: bool = False, **image: Any) -> Path:
        """Dataset-level keys left unset, so the global defaults (resolution, caption_strategy...) apply."""
        path = home / "config" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"id": "toy", "type": "local", "dataset_type": "image",
                 "instance_data_dir": str(images or self.images),
                 "crop": True, "crop_style": "center", "crop_aspect": "square", **image}
        text = {"id": "toy-text", "type": "local", "dataset_type": "text_embeds", "default": True}
        evals = [{"id": name, "type": "local", "dataset_type": "eval", "instance_data_dir": str(directory),
                  "crop": True, "crop_style": "center", "crop_aspect": "square"}
                 for name, directory in (("held-out", self.eval_images()), ("held-out-b", self.wide_images()))]
        path.write_text(json.dumps([entry, *(evals if held_out else []), text]))
        return path

    def raw(self, ctx: Context, overrides: dict[str, Any]) -> dict[str, Any]:
        crop = overrides.pop("crop", True)
        images = self.wide_images() if overrides.pop("images", None) == "wide" else self.images
        held_out = overrides.pop("eval", False)
        model_type = overrides.get("model_type", ctx.model_type)
        base = {
            "--model_family": "pixart_sigma" if ctx.family == "pixart" else "flux", "--model_flavour": "tiny",
            "--pretrained_model_name_or_path": str(self.models[ctx.family]), "--model_type": ctx.model_type,
            "--output_dir": str(ctx.home / "output"),
            "--data_backend_config": str(self.dataloader(
                ctx.home, f"dataloader-{images.name}-{int(crop)}-{int(held_out)}.json", images, held_out, crop=crop)),
            "--resolution": 64, "--resolution_type": "pixel_area",
            "--train_batch_size": 2, "--learning_rate": 1e-3, "--max_train_steps": 2, "--seed": 7,
            "--checkpoint_step_interval": 0, "--report_to": "none", **PINS, "--validation_num_inference_steps": 2,
        }
        if model_type == "lora":
            base["--lora_rank"] = 4
            if ctx.lora_type == "lycoris":
                base["--lora_type"] = "lycoris"
        return overlay(base, {f"--{k}": v for k, v in overrides.items()})

    # -- flip values that need files --
    def _once(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._made:
            self._made[name] = make()
        return self._made[name]

    def other_family(self, ctx: Context) -> str:
        return "flux" if ctx.family == "pixart" else "pixart_sigma"

    def other_model_dir(self, ctx: Context) -> str:
        return str(self.models["flux" if ctx.family == "pixart" else "pixart"])

    def other_flavour(self, ctx: Context) -> str:
        fam = get_registry().family("pixart_sigma" if ctx.family == "pixart" else "flux")
        return next(name for name in sorted(fam.flavours) if name != "tiny")

    def perturbed_model_dir(self, ctx: Context) -> str:
        """A copy of the tiny model whose transformer weights are shifted a little."""
        def make() -> str:
            from safetensors.torch import load_file, save_file

            target = self.root / f"{ctx.family}-perturbed"
            shutil.copytree(self.models[ctx.family], target)
            for path in (target / "transformer").glob("*.safetensors"):
                tensors = load_file(path)
                save_file({k: v + 0.01 for k, v in tensors.items()}, path)
            return str(target)

        return self._once(f"perturbed-{ctx.family}", make)

    def filename_captions_dataloader(self, ctx: Context) -> str:
        return str(self.dataloader(ctx.home, "other.json", caption_strategy="filename"))

    def lycoris_file(self) -> str:
        def make() -> str:
            path = self.root / "lycoris.json"
            path.write_text(json.dumps({"algo": "loha"}))
            return str(path)

        return self._once("lycoris", make)

    def prompt_library(self) -> str:
        def make() -> str:
            path = self.root / "prompts.json"
            path.write_text(json.dumps({"circle": "a green circle"}))
            return str(path)

        return self._once("prompts", make)

    def accelerate_file(self) -> str:
        def make() -> str:
            path = self.root / "accelerate.yaml"
            path.write_text("compute_environment: LOCAL_MACHINE\n")
            return str(path)

        return self._once("accelerate", make)

    def adapter_file(self, ctx: Context) -> str:
        """The adapter a 2-step run of this context writes (a LoRA to start the flipped run from)."""
        def make() -> str:
            lora = Context(ctx.name, ctx.family, "lora", ctx.lora_type, ctx.home)
            cfg = validate(self.raw(lora, {"learning_rate": 0.05}))
            out = run(cfg, lora)
            weights = sorted(Path(out["output_dir"]).glob("*.safetensors"))
            target = self.root / f"init-{ctx.name}.safetensors"
            shutil.copy(weights[0], target)
            return str(target)

        return self._once(f"adapter-{ctx.name}", make)


def clean(home: Path) -> None:
    for child in home.iterdir():
        if child.name != "config":
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def run(cfg: Any, ctx: Context) -> dict[str, Any]:
    """Train ``cfg`` as a local job in a clean home: losses, the output dir, the home's files."""
    from simpletuner_core.cli.jobs_local import run_job

    clean(ctx.home)
    code, result = run_job(cfg, ctx.home, get_registry(), job_id="job")
    if code != 0 or result is None:
        events = (ctx.home / "jobs" / "job" / "events.jsonl")
        tail = events.read_text()[-600:] if events.exists() else ""
        raise RuntimeError(f"training failed (exit {code}): {tail}")
    return {"losses": [round(x, 6) for x in result.losses], "output_dir": result.output_dir}


def _weights(path: Path) -> str:
    """The tensors of a safetensors file (its metadata may name the run), hashed."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].float().numpy().tobytes())
    return digest.hexdigest()[:16]


def _files(home: Path) -> dict[str, str]:
    """Every file the run left under the home (besides job records), with the content hash of the weights."""
    out = {}
    for path in sorted(home.rglob("*")):
        rel = path.relative_to(home).as_posix()
        if not path.is_file() or rel.startswith(("jobs/", "config/", "state.db")):
            continue
        out[rel] = _weights(path) if path.suffix == ".safetensors" else ""
    return out


def fp_plan(cfg: Any, ctx: Context) -> Any:
    from simpletuner_core.training.engine import plan_only

    return json.dumps(plan_only(cfg, ctx.home).to_dict(), sort_keys=True, default=str)


def fp_lr(cfg: Any, ctx: Context) -> Any:
    import torch

    reg = get_registry()
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.ones(8))
    optimizer = reg.optimizers.get(cfg.optimizer).factory([param], cfg)
    scheduler = reg.schedulers.get(cfg.lr_scheduler).factory(optimizer, cfg, LR_STEPS)
    curve = []
    for step in range(LR_STEPS):
        groups = [{k: (round(v, 10) if isinstance(v, float) else str(v)) for k, v in g.items() if k != "params"}
                  for g in optimizer.param_groups]
        curve.append(groups)
        param.grad = torch.full_like(param, 0.1 * (step % 3 - 1))
        optimizer.step()
        scheduler.step()
    return json.dumps([curve, [round(float(x), 8) for x in param.detach()]], sort_keys=True)


def fp_train(cfg: Any, ctx: Context) -> Any:
    out = run(cfg, ctx)
    weights = {p.name: _weights(p) for p in sorted(Path(out["output_dir"]).rglob("*.safetensors"))}
    return json.dumps([out["losses"], weights])


def fp_files(cfg: Any, ctx: Context) -> Any:
    run(cfg, ctx)
    return json.dumps(_files(ctx.home), sort_keys=True)


def fp_eval(cfg: Any, ctx: Context) -> Any:
    from simpletuner_core.events.log import read_events

    run(cfg, ctx)
    events = read_events(ctx.home / "jobs" / "job" / "events.jsonl")
    return [(e.data["step"], round(e.data["metrics"]["eval_loss"], 6)) for e in events
            if e.type == "training.metric" and "eval_loss" in e.data.get("metrics", {})]


def fp_validation(cfg: Any, ctx: Context) -> Any:
    from PIL import Image

    out = run(cfg, ctx)
    images = {}
    for path in sorted((Path(out["output_dir"]) / "validation").glob("*.png")):
        with Image.open(path) as image:
            images[path.name] = [image.size, _sha(image.convert("RGB").tobytes())]
    return json.dumps(images)


def fp_launch(cfg: Any, ctx: Context) -> Any:
    from simpletuner_core.jobs.models import Job
    from simpletuner_core.jobs.runner import launch_command

    return launch_command(Job(id="job", config=to_wire(cfg)), "python")


FINGERPRINTS: dict[str, Callable[[Any, Context], Any]] = {
    "plan": fp_plan, "lr": fp_lr, "train": fp_train, "eval": fp_eval, "files": fp_files, "validation": fp_validation,
    "launch": fp_launch,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("key-table")
        mp.setenv("SIMPLETUNER_HOME", str(root / "default-home"))
        yield World(root)


def _resolve(value: Any, w: World, ctx: Context) -> Any:
    return value(w, ctx) if callable(value) else value


def _errors(raw: dict[str, Any]) -> tuple[Any, list[Any]]:
    try:
        return validate(raw), []
    except ConfigInvalid as exc:
        return None, exc.errors


def _names(notes: list[str], key: str) -> bool:
    import re

    return any(re.search(rf"(?<![a-z_]){re.escape(key)}(?![a-z_])", note) for note in notes)


class Ignored(Exception):
    """Why a key counts as accepted and ignored (or why its row could not decide)."""


def check_key(w: World, ctx: Context, key: str, flip: Flip, baselines: dict[Any, Any]) -> str:
    """How the flip was seen: refused, warned, covered or the fingerprint kind that changed; else raise
    :class:`Ignored`."""
    start = {"validation": VALIDATION, "eval": EVAL}.get(flip.kind, {})
    base = {k: _resolve(v, w, ctx) for k, v in {**start, **flip.base}.items()}
    flipped = {**base, **{k: _resolve(v, w, ctx) for k, v in flip.also.items()}, key: _resolve(flip.value, w, ctx)}
    base_raw, flip_raw = w.raw(ctx, dict(base)), w.raw(ctx, dict(flipped))
    base_cfg, base_errors = _errors(base_raw)
    if base_errors and flip.base:  # the row's setting does not apply in this context: flip the key alone
        return check_key(w, ctx, key, Flip(flip.value, flip.kind, also=flip.also, covered=flip.covered), baselines)
    if base_errors:
        raise Ignored(f"the baseline for this row is refused: {[(e.path, e.message) for e in base_errors]}")
    cfg, errors = _errors(flip_raw)
    if errors:
        if any(e.path.split(".")[0] == key for e in errors):
            return "refused"
        raise Ignored(f"the flip is refused at other keys: {[(e.path, e.message) for e in errors]}")
    if _names([n for n in warnings_for(cfg, flip_raw) if n not in warnings_for(base_cfg, base_raw)], key):
        return "warned"
    if flip.kind == "covered":
        return "covered"  # existence of the named test is asserted by test_covered_rows_name_real_tests
    if flip.kind in ("refused", "warned"):
        raise Ignored(f"expected it {flip.kind}, but it was accepted silently")
    fingerprint = FINGERPRINTS[flip.kind]
    cache_key = (ctx.name, flip.kind, json.dumps(base, sort_keys=True, default=str))
    if cache_key not in baselines:
        baselines[cache_key] = fingerprint(base_cfg, ctx)
    try:
        after = fingerprint(cfg, ctx)
    except Exception as exc:  # a flip that crashes the run is reported, not hidden
        raise Ignored(f"the flipped {flip.kind} fingerprint failed: {type(exc).__name__}: {str(exc)[:300]}") \
            from exc
    if after == baselines[cache_key]:
        raise Ignored(f"accepted and ignored (the {flip.kind} fingerprint did not change)")
    return flip.kind


def test_every_config_key_has_a_row() -> None:
    keys = {a.name for a in attrs.fields(config_class())}
    assert not keys - FLIPS.keys(), f"config keys without a FLIPS row: {sorted(keys - FLIPS.keys())}"
    assert not FLIPS.keys() - keys, f"FLIPS rows for keys the model lacks: {sorted(FLIPS.keys() - keys)}"
    assert all(f.kind in KINDS for f in FLIPS.values())


def test_covered_rows_name_real_tests() -> None:
    root = Path(__file__).resolve().parents[1]
    for key, flip in FLIPS.items():
        if flip.kind != "covered":
            continue
        path, _, name = flip.covered.partition("::")
        source = (root / path).read_text() if (root / path).is_file() else ""
        assert f"def {name}(" in source, f"{key}: covered by {flip.covered}, which does not exist"


def test_fingerprints_are_deterministic(world: World, tmp_path: Path) -> None:
    """The baseline twice gives the same fingerprint, so a difference after a flip is the flip's."""
    for family in ("pixart", "flux"):
        ctx = Context(f"{family}-lora", family, "lora", "standard", tmp_path / family)
        ctx.home.mkdir()
        cfg = validate(world.raw(ctx, {**VALIDATION, **EVAL}))
        for kind, fingerprint in FINGERPRINTS.items():
            assert fingerprint(cfg, ctx) == fingerprint(cfg, ctx), (family, kind)


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_no_key_is_accepted_and_ignored(world: World, tmp_path: Path, context: str) -> None:
    family, model_type, lora_type = CONTEXTS[context]
    ctx = Context(context, family, model_type, lora_type, tmp_path)
    baselines: dict[Any, Any] = {}
    failures: list[str] = []
    seen: dict[str, list[str]] = {}
    for key in sorted(attrs.fields_dict(config_class())):
        gap = KNOWN_GAPS.get((key, context))
        try:
            outcome = check_key(world, ctx, key, FLIPS[key], baselines)
        except Ignored as exc:
            if gap is None:
                failures.append(f"{key} in {context}: {exc}")
            continue
        except Exception as exc:  # one broken row must not hide the others
            failures.append(f"{key} in {context}: the row failed: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        if key in NEEDS_PARTNER:
            try:
                check_key(world, ctx, key, Flip(FLIPS[key].value, "warned"), baselines)
                if key in PARTNER_GAPS:
                    failures.append(f"{key} in {context}: now warned without {NEEDS_PARTNER[key]}; remove it from "
                                    "PARTNER_GAPS")
            except Ignored:
                if key not in PARTNER_GAPS:
                    failures.append(f"{key} in {context}: without {NEEDS_PARTNER[key]} it must be named by a "
                                    "warning")
        if gap is not None:
            failures.append(f"{key} in {context}: listed in KNOWN_GAPS ({gap}) but now {outcome}; remove it")
        seen.setdefault(outcome, []).append(key)
    print(context, {outcome: len(keys) for outcome, keys in sorted(seen.items())})
    assert not failures, "\n".join(failures)
