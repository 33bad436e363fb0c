"""What identifies a run across a resume: the config hash, the keys that may change, the checkpoint manifest and
the data plan's fingerprint. A resume refuses when any of them disagrees, naming what changed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs

from simpletuner_core.config.model import unstructure

#: Keys that may change between a checkpoint and its resume: schedule length, cadence, reporting, and paths
#: (moving an output or dataloader file is fine; what the data *is* is checked by the plan fingerprint).
RESUME_MAY_CHANGE = ("resume_from_checkpoint", "max_train_steps", "num_train_epochs", "checkpoint_step_interval", "checkpoint_epoch_interval",
                     "checkpoints_total_limit", "validation_step_interval", "validation_epoch_interval", "validation_prompt", "validation_disable",
                     "report_to", "webhook_config", "webhook_reporting_interval", "webhook_restricted",
                     "tracker_run_name",
                     "tracker_project_name", "output_dir", "data_backend_config", "cache_dir_vae", "cache_dir_text",
                     "pretrained_model_name_or_path", "dataloader_prefetch",
                     # hooks, previews and publishing observe training without changing it
                     "validation_method", "validation_external_script", "validation_external_background",
                     "validation_preview", "validation_preview_steps", "validation_preview_decoder",
                     "post_checkpoint_script", "post_upload_script", "hook_script_timeout", "hook_script_fatal",
                     "push_to_hub", "push_checkpoints_to_hub", "hub_model_id", "model_card_private", "model_card_note", "publish_local_dir",
                     "publish_timeout",
                     # cache mechanics, evaluation and the base-model benchmark never change the trained weights
                     "vae_batch_size", "vae_cache_ondemand", "gradient_checkpointing_interval", "disable_benchmark",
                     "num_eval_images", "eval_dataset_id", "eval_steps_interval", "eval_epoch_interval",
                     "eval_loss_disable", "eval_timesteps",
                     # where a multi-node job's ranks meet and which machine is which rank (a cluster picks them anew
                     # on every launch); the topology itself (num_machines, num_processes) still must match
                     "machine_rank", "main_process_ip", "main_process_port")


def _resume_keys(cfg: Any, registry: Any) -> list[str]:
    """Keys a resume must keep: core's and the config's own family's, never another family's plugin keys (which
    come and go as plugins are installed) and never :data:`RESUME_MAY_CHANGE`."""
    families = registry.families
    mine = families.canonical(cfg.model_family) if cfg.model_family else None
    foreign = {f.name for f in registry.config_fields.values()
               if f.family and (families.canonical(f.family) or f.family) != mine}
    return sorted(k for k in unstructure(cfg) if k not in RESUME_MAY_CHANGE and k not in foreign)


def config_hash(cfg: Any, registry: Any | None = None) -> str:
    if registry is None:
        from simpletuner_core.plugins import get_registry

        registry = get_registry()
    now = unstructure(cfg)
    data = {k: now[k] for k in _resume_keys(cfg, registry)}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_diff(saved: dict[str, Any], cfg: Any, registry: Any) -> list[str]:
    """``key: checkpoint=… now=…`` for every resume key that changed. A key the checkpoint's config lacks (a
    plugin installed or a key added since) counts as unchanged while it is at its default."""
    now = json.loads(json.dumps(unstructure(cfg), default=str))  # the manifest went through JSON
    defaults = json.loads(json.dumps({a.name: a.default for a in attrs.fields(type(cfg))}, default=str))
    return [f"{k}: checkpoint={saved.get(k)!r} now={now.get(k)!r}" for k in _resume_keys(cfg, registry)
            if (saved[k] if k in saved else defaults.get(k)) != now.get(k)]


def checkpoint_manifest(cfg: Any, *, epoch: int, step_in_epoch: int, seed: int, fingerprint: str,
                        adapter: Any, job_id: str) -> dict[str, Any]:
    """What ``checkpoint-N/manifest.json`` records. Checkpoints get published (the hub, a shared directory), so
    the config is stored with credentials, hook commands and local paths redacted; those keys are all in
    :data:`RESUME_MAY_CHANGE`, so a resume never compares them (``config_hash`` comes from the live config)."""
    from simpletuner_core.hooks.card import redact_config

    return {"epoch": epoch, "step_in_epoch": step_in_epoch, "seed": seed, "plan_fingerprint": fingerprint,
            "config_hash": config_hash(cfg), "config": redact_config(unstructure(cfg)), "adapter": adapter,
            "job_id": job_id}


def plan_fingerprint(plan: Any, processes: int) -> str:
    """What the sampler's order depends on: every sample's identity and bucket, the datasets' weights, processes."""
    rows = [f"{s.dataset_id}|{s.path}|{s.plan.target_size}" for s in plan.samples]
    rows += [f"ref:{r.target_path}|{r.sample.dataset_id}|{r.sample.path}" for r in plan.references]
    weights = [f"{d.id}:{d.repeats}:{d.probability}" for d in plan.datasets]
    body = "\n".join([*rows, *weights, f"processes={processes}"])
    return hashlib.sha256(body.encode()).hexdigest()[:16]
