"""The generic training loop: accelerate, optimizers and schedules from the registry, exact resume.

Exact resume rests on three things: the data order is a pure function of (seed, epoch); every micro-step reseeds
torch's RNG from (seed, micro-step index); and checkpoints hold optimizer, scheduler, weights and the position.
Nothing model-specific lives here: the family's trainer class encodes data and computes the loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from simpletuner_core.config.model import unstructure
from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.training import conditioning, evaluation, grad_checkpointing, trackers
from simpletuner_core.training.adapter_setup import adapter_diff, apply_adapter, describe_adapter
from simpletuner_core.training.checkpoint import (
    begin_checkpoint,
    finish_checkpoint,
    resolve_resume,
    staging_dir,
)
from simpletuner_core.training.clipping import clip_gradients
from simpletuner_core.training.control import Control, signals_to
from simpletuner_core.training.data_setup import cache_dirs, make_plan, require
from simpletuner_core.training.ema import Ema
from simpletuner_core.training.stages import Stage, Stages
from simpletuner_core.training.validation import ValidationContext, publish_images

TEXT_CACHE_MEMORY_BYTES = 2 * 2**30
_DTYPES = {"no_change": "float32", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@attrs.frozen
class TrainResult:
    status: str  # completed | stopped | cancelled
    global_step: int
    output_dir: str
    losses: list[float]


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


def _micro_seed(seed: int, micro_index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{micro_index}".encode()).digest()[:7], "big")


def _seed_everything(torch: Any, seed: int) -> None:
    """torch.manual_seed without its lazy-device bookkeeping, which costs ~0.3 ms per call on CPU machines."""
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _broadcast_commands(accelerator: Any, cmd: dict[str, bool]) -> dict[str, bool]:
    import torch
    from accelerate.utils import broadcast

    names = sorted(cmd)
    flags = torch.tensor([float(cmd[n]) for n in names], device=accelerator.device)
    flags = broadcast(flags, from_process=0)
    return {n: bool(v) for n, v in zip(names, flags.tolist(), strict=True)}


def _quiet_library_progress_bars() -> None:
    """Our progress bar and events report loading; the libraries' per-file bars are noise in logs."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _make_accelerator(cfg: Any, output_dir: Path) -> Any:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    cuda = torch.cuda.is_available()
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    log_with = trackers.log_with(cfg.report_to)
    if cfg.report_to in ("wandb", "all") and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")  # never block or fail a run on a missing login
    AcceleratorState._reset_state(True)  # the state is a process-wide singleton (notebooks, tests)
    return Accelerator(cpu=not cuda, mixed_precision=mp, log_with=log_with,
                       project_config=ProjectConfiguration(project_dir=str(output_dir),
                                                           logging_dir=str(output_dir / "logs")))


class Trainer:
    """One training run. ``run()`` returns a :class:`TrainResult` or raises with a reason a user can act on."""

    def __init__(self, cfg: Any, *, job_id: str, home: Path, emitter: EventEmitter,
                 control: Control | None = None, registry: Any | None = None) -> None:
        from simpletuner_core.plugins import get_registry

        self.cfg = cfg
        self.job_id = job_id
        self.home = Path(home)
        self.events = emitter
        self.control = control or Control()
        self.registry = registry or get_registry()
        self.family = self.registry.family(cfg.model_family)
        self.output_dir = Path(cfg.output_dir).expanduser()
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.hooks: Any = None  # JobHooks on the main process
        self.previews: Any = None  # PreviewDecoder when validation_preview is on
        self.stages = Stages(emitter)
        self.started = time.monotonic()
        self.eval_batches: list[list[Any]] = []  # eval-loss batches (empty: no eval loss)
        self.eval_losses: list[tuple[int, float]] = []  # (step, eval loss), drawn on the loss plot
        self._on_demand: tuple[Any, Any] | None = None  # (read, encode) with vae_cache_ondemand

    # -- stages ---------------------------------------------------------------------------------------------
    def stage(self, name: str, message: str, **meta: Any) -> Stage:
        """Start lifecycle stage ``name`` (SimpleTuner's keys, see ``events/wire.py``); the next one ends it."""
        return self.stages.begin(name, message, **meta)

    def run(self) -> TrainResult:
        with self.stages:  # an exception marks the open stage failed
            return self._prepare_and_run()

    def _prepare_and_run(self) -> TrainResult:
        cfg = self.cfg
        resume_dir = resolve_resume(cfg.resume_from_checkpoint, self.output_dir)
        manifest = json.loads((resume_dir / "manifest.json").read_text()) if resume_dir else None
        seed = int(manifest["seed"]) if manifest else (cfg.seed if cfg.seed is not None else random.randrange(2**31))
        self.stage("init_data_backend", "planning the dataset")
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate/torchrun launches
        # Random crops are keyed by the run's seed (drawn or set), so the recorded seed reproduces them too.
        datasets, plan = make_plan(cfg, self.home, self.registry, self.family.size_multiple, seed, processes)
        fingerprint = plan_fingerprint(plan, processes)
        self.events.emit("job.plan", plan=plan.to_dict())
        self.events.log(plan.render())
        conditioning.check_supported(plan, self.family, cfg)
        if manifest:
            self._check_resume(manifest, fingerprint)


        accelerator = _make_accelerator(cfg, self.output_dir)
        device = accelerator.device
        if accelerator.is_main_process:
            from simpletuner_core.hooks.job import JobHooks

            self.hooks = JobHooks(cfg, self.job_id, self.events, self.registry)
        result = None
        try:
            result = self._run(cfg, accelerator, device, resume_dir, manifest, seed, datasets, plan, fingerprint)
            return result
        finally:
            if self.hooks is not None:  # uploads of a stop checkpoint finish; a cancel or a crash skips them
                self.hooks.close(abandon=result is None or result.status == "cancelled")

    def _run(self, cfg: Any, accelerator: Any, device: Any, resume_dir: Path | None, manifest: Any, seed: int,
             datasets: list[Any], plan: Any, fingerprint: str) -> TrainResult:
        import torch

        weight_dtype = self._weight_dtype(torch)
        self.stage("init_load_base_model", f"loading {self.family.name} ({cfg.model_flavour or cfg.pretrained_model_name_or_path})")
        _quiet_library_progress_bars()
        family = self.family.trainer()(cfg, self.family, self.home / "cache" / "models")
        family.load(device, weight_dtype, self.events.log)
        if cfg.validation_preview and accelerator.is_main_process:
            from simpletuner_core.training.preview import decoder_for

            self.previews = decoder_for(family, cfg, self.family.name, device, self.events.log)

        if not accelerator.is_main_process:  # the main process fills the caches; the others then read them
            accelerator.wait_for_everyone()
        latents, texts = self._fill_caches(family, datasets, plan)
        self._caches = (latents, texts)
        refs = conditioning.fill_caches(plan, datasets, cfg, self.home, family, self.registry, self.events.log)
        if accelerator.is_main_process:
            accelerator.wait_for_everyone()
        if hasattr(family, "use_validation_inputs"):
            family.use_validation_inputs(*conditioning.validation_inputs(plan, datasets, self.registry))

        self.stage("init_prepare_models", "trainable model, adapter, optimizer and accelerator")
        model = family.trainable()
        if cfg.base_model_precision in self.registry.quantizers:
            self.events.log(f"quantizing the base weights to {cfg.base_model_precision}")
            quantizer = self.registry.quantizers.get(cfg.base_model_precision)
            quantizer.quantize(model, cfg, exclude=list(getattr(family, "quantize_exclude", [])))
        adapter = None
        _seed_everything(torch, seed)  # adapter init (LoRA A matrices, LyCORIS) draws from torch's RNG: one seed, one run
        if cfg.model_type == "lora":
            adapter = apply_adapter(cfg, self.family, family, model, self.registry, fresh=not manifest,
                                    log=self.events.log)
            params = adapter.params
        else:
            model.requires_grad_(True)
            params = [p for p in model.parameters() if p.requires_grad]
        if cfg.gradient_checkpointing:
            grad_checkpointing.enable(model, cfg.gradient_checkpointing_interval)
        model.train()

        from simpletuner_core.data.sampler import BucketBatchSampler

        sampler = BucketBatchSampler(plan.samples, datasets, cfg.train_batch_size, seed,
                                     num_replicas=accelerator.num_processes, rank=accelerator.process_index,
                                     pad_remainders=cfg.disable_bucket_pruning)
        ga = cfg.gradient_accumulation_steps
        steps_per_epoch = len(sampler) // ga
        require(steps_per_epoch > 0, "gradient_accumulation_steps",
                f"an epoch has {len(sampler)} micro-batches, fewer than gradient_accumulation_steps ({ga}); "
                "lower --gradient_accumulation_steps or --train_batch_size, or add images/repeats")
        total = cfg.max_train_steps or cfg.num_train_epochs * steps_per_epoch

        optimizer = self.registry.optimizers.get(cfg.optimizer).factory(params, cfg)
        scheduler = self.registry.schedulers.get(cfg.lr_scheduler).factory(optimizer, cfg, total)
        # The schedule is stepped by us once per optimizer step (accelerate would step it once per process).
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(scheduler)
        if adapter is not None and adapter.checkpoint_module is not None:
            accelerator.register_for_checkpointing(adapter.checkpoint_module)
        ema = Ema(params, cfg.ema_decay) if cfg.use_ema else None
        if ema is not None:
            accelerator.register_for_checkpointing(ema)
        trackers.start(accelerator, cfg.report_to, cfg.tracker_project_name,
                       {k: v for k, v in unstructure(cfg).items() if isinstance(v, (int, float, str, bool))},
                       cfg.tracker_run_name or self.job_id, lambda note: self.events.log(note, level="warning"))

        global_step, epoch, step_in_epoch = 0, 0, 0
        if manifest:
            self.stage("init_resume_checkpoint", f"resumed from {resume_dir.name} at step {manifest['step']}")
            accelerator.load_state(str(resume_dir))
            global_step, epoch, step_in_epoch = manifest["step"], manifest["epoch"], manifest["step_in_epoch"]

        state = _LoopState(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                           family=family, adapter=adapter, ema=ema, params=params, seed=seed, total=total,
                           steps_per_epoch=steps_per_epoch, global_step=global_step, epoch=epoch,
                           step_in_epoch=step_in_epoch, fingerprint=fingerprint)
        self._setup_eval(family, plan)
        if not manifest and not cfg.disable_benchmark and self._validation_due(state, final=True):
            self.stage("benchmark_base_model", "validating the base model before the first step")
            self._validate(state)
        self.stages.close()
        self.events.emit("job.running", step=global_step, total=total, steps_per_epoch=steps_per_epoch, seed=seed,
                         message=f"training {total} steps ({steps_per_epoch} per epoch), seed {seed}")
        with signals_to(self.control):
            status = self._loop(state, sampler, plan.samples, latents, texts,
                                (conditioning.reference_index(plan), refs))
        # Hooks end before the final event, so job.completed/stopped/cancelled is the last thing readers see.
        if status != "completed":
            self.stage("training_abort", f"{status} at step {state.global_step}")
        if status == "cancelled":
            if self.hooks is not None:
                self.hooks.close(abandon=True)
            self.stages.close()
            self.events.emit("job.cancelled", step=state.global_step)
        elif status == "stopped":
            path = (self.output_dir / f"checkpoint-{state.global_step}" if state.last_checkpoint == state.global_step
                    else self._checkpoint(state))
            if self.hooks is not None:
                self.hooks.close()
            self.stages.close()
            self.events.emit("job.stopped", step=state.global_step, checkpoint=str(path))
        else:
            if self._validation_due(state, final=True):
                with self.stages.scoped("final_validation", f"validating at step {state.global_step}"):
                    self._validate(state)
            self.stage("model_save", f"writing final weights to {self.output_dir}")
            written: list[str] = []
            if accelerator.is_main_process:
                unwrapped = accelerator.unwrap_model(model)
                fmt = self.registry.lora_formats.get(cfg.lora_format)
                written = family.save_final(unwrapped, self.output_dir, adapter, fmt)
                if ema is not None:
                    ema.copy_to(params)
                    family.save_final(unwrapped, self.output_dir / "ema", adapter, fmt)
            accelerator.wait_for_everyone()
            self.stage("training_complete", "publishing and wrapping up")
            published = []
            if self.hooks is not None:
                published = self.hooks.finished(self.output_dir, state.global_step, self.losses, self.lrs)
            self._summary(state)
            self.stages.close()
            self.events.emit("job.completed", step=state.global_step, output_dir=str(self.output_dir),
                             files=written, published=published)
        if cfg.report_to != "none":
            accelerator.end_training()
        return TrainResult(status, state.global_step, str(self.output_dir), list(self.losses))

    def _summary(self, st: _LoopState) -> None:
        losses = self.losses
        self.events.emit("training.summary", step=st.global_step, total=st.total, epochs=st.epoch + 1,
                         final_loss=losses[-1] if losses else None,
                         mean_loss=sum(losses) / len(losses) if losses else None,
                         seconds=round(time.monotonic() - self.started, 2), output_dir=str(self.output_dir))

    def _weight_dtype(self, torch: Any) -> Any:
        name = _DTYPES.get(self.cfg.base_model_precision, "float32")
        return getattr(torch, name)

    def _check_resume(self, manifest: dict[str, Any], fingerprint: str) -> None:
        """Refuse a resume whose config or adapter differs from the checkpoint's, before any weights load."""
        from simpletuner_core.config.errors import ConfigError, ConfigInvalid

        diff = adapter_diff(manifest.get("adapter"), describe_adapter(self.cfg, self.family, self.registry))
        if manifest.get("config_hash") != config_hash(self.cfg, self.registry):
            saved = manifest.get("config")
            diff += config_diff(saved, self.cfg, self.registry) if saved is not None else ["unknown difference"]
        if diff:
            raise ConfigInvalid([ConfigError("resume_from_checkpoint", "checkpoint was trained with a different "
                                             "config: " + "; ".join(dict.fromkeys(diff)))])
        if manifest.get("plan_fingerprint") not in (None, fingerprint):
            raise ConfigInvalid([ConfigError(
                "resume_from_checkpoint", "the dataset changed since the checkpoint (images added, removed or "
                "re-bucketed, or repeats/probability edited), so the saved position would replay a different "
                "order; restore the dataset, or start a new run without resume_from_checkpoint")])

    # -- caches ---------------------------------------------------------------------------------------------
    def _fill_caches(self, family: Any, datasets: list[Any], plan: Any) -> tuple[Any, Any]:
        from simpletuner_core.data.cache import LatentCache, TextEmbedCache

        vae_dirs, text_dir = cache_dirs(self.cfg, datasets, self.home)
        by_id = {d.id: d for d in datasets}
        backends = {d.id: self.registry.data_backends.get(d.type) for d in datasets}

        def read(sample: Any) -> bytes:
            return backends[sample.dataset_id].read_bytes(by_id[sample.dataset_id], sample.path)

        latent_caches: dict[str, Any] = {}
        everything = [*plan.samples, *plan.eval_samples]
        if self.cfg.vae_cache_ondemand:
            self._on_demand = (read, family.encode_images)
            self.events.log(f"vae_cache_ondemand: latents are encoded as batches are drawn ({len(everything)} images)")
        else:
            self.stage("init_vae_cache", f"encoding {len(everything)} images")
        for ds_id, directory in vae_dirs.items():
            cache = LatentCache(directory, family.encoder_id("vae"))
            latent_caches[ds_id] = cache
            if self.cfg.vae_cache_ondemand:
                continue
            mine = [s for s in everything if s.dataset_id == ds_id]
            began = time.perf_counter()
            stats = cache.ensure(mine, read, family.encode_images, batch_size=self.cfg.vae_batch_size)
            seconds = time.perf_counter() - began
            rate = f", {stats.encoded / seconds:.1f} images/s" if stats.encoded and seconds > 0 else ""
            self.events.log(f"latent cache {ds_id}: {stats.encoded} encoded, {stats.reused} reused "
                            f"(vae_batch_size {self.cfg.vae_batch_size}{rate})")
        self.stage("init_text_embed_cache", "encoding captions")
        text_cache = TextEmbedCache(text_dir, family.encoder_id("text"))
        captions = sorted({s.caption for s in everything} | {""})
        batch = next((d.write_batch_size for d in datasets if d.dataset_type == "text_embeds"), 64)
        stats = text_cache.ensure(captions, family.encode_prompts, batch_size=batch)
        self.events.log(f"text-embed cache: {stats.encoded} encoded, {stats.reused} reused")
        one = text_cache.load("")
        footprint = len(captions) * sum(t.numel() * t.element_size() for t in one.values())
        if footprint > TEXT_CACHE_MEMORY_BYTES:  # real T5 embeds are ~5 MB per caption: read them from disk
            text_cache.keep_in_memory(False)
            self.events.log(f"text embeds ({footprint / 2**30:.1f} GiB) stay on disk, read per batch")
        return latent_caches, text_cache

    # -- loop -------------------------------------------------------------------------------------------------
    def _loop(self, st: _LoopState, sampler: Any, samples: list[Any], latents: dict[str, Any],
              texts: Any, references: tuple[dict[Any, Any], dict[str, Any]]) -> str:
        import torch

        cfg = self.cfg
        ga = cfg.gradient_accumulation_steps
        device = st.accelerator.device
        drop = cfg.caption_dropout_probability
        ref_index, ref_caches = references

        def collate(batch: list[int], micro_index: int) -> tuple[Any, dict[str, Any], Any]:
            rng = random.Random(_micro_seed(st.seed, micro_index))
            self._ensure_latents(latents, [samples[i] for i in batch])
            lat = torch.stack([latents[samples[i].dataset_id].load(samples[i]) for i in batch])
            caps = ["" if drop and rng.random() < drop else samples[i].caption for i in batch]
            embeds = [texts.load(c) for c in caps]
            text = {k: torch.stack([e[k] for e in embeds]) for k in embeds[0]}
            refs = None
            if ref_index:
                refs = conditioning.batch_references([samples[i] for i in batch], ref_index, ref_caches,
                                                     cfg.conditioning_multidataset_sampling, rng)
            refs = [r.to(device) for r in refs] if refs else None
            return lat.to(device), {k: v.to(device) for k, v in text.items()}, refs

        pool = ThreadPoolExecutor(max_workers=1) if cfg.dataloader_prefetch else None
        timer = _Rate()
        try:
            while st.global_step < st.total:
                batches = sampler.batches(st.epoch)
                usable = batches[: st.steps_per_epoch * ga]
                start = st.step_in_epoch * ga
                pending = None
                for pos in range(start, len(usable), ga):
                    group = usable[pos:pos + ga]
                    base_micro = st.epoch * st.steps_per_epoch * ga + pos
                    total_loss = 0.0
                    for k, batch in enumerate(group):
                        micro = base_micro + k
                        if pending is not None:
                            lat, text, refs = pending.result()
                        else:
                            lat, text, refs = collate(batch, micro)
                        pending = None
                        if pool is not None:
                            nxt = pos + k + 1
                            if nxt < len(usable):
                                pending = pool.submit(collate, usable[nxt], micro + 1)
                        _seed_everything(torch, _micro_seed(st.seed, micro))
                        sync = k == len(group) - 1
                        ctx = contextlib.nullcontext() if sync else st.accelerator.no_sync(st.model)
                        with ctx:
                            if refs is None:
                                loss = st.family.loss(st.model, lat, text)
                            else:
                                loss = st.family.loss(st.model, lat, text, conditioning=refs)
                            st.accelerator.backward(loss / ga)
                        total_loss += float(loss.detach()) / ga
                    clip_gradients(st.accelerator, st.params, cfg.grad_clip_method, cfg.max_grad_norm)
                    st.optimizer.step()
                    st.scheduler.step()
                    st.optimizer.zero_grad(set_to_none=True)
                    if st.ema is not None:
                        st.ema.update(st.params)
                    st.global_step += 1
                    st.step_in_epoch += 1
                    self.losses.append(total_loss)
                    self._report(st, total_loss, timer.tick())
                    outcome = self._after_sync(st)
                    if outcome:
                        if pending is not None:
                            pending.cancel()
                        return outcome
                    if st.global_step >= st.total:
                        return "completed"
                st.epoch += 1
                st.step_in_epoch = 0
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return "completed"

    def _report(self, st: _LoopState, loss: float, rate: float) -> None:
        lr = float(st.scheduler.get_last_lr()[0])
        self.lrs.append(lr)
        remaining = st.total - st.global_step
        self.events.emit("training.status", step=st.global_step, total=st.total, epoch=st.epoch + 1,
                         percent=round(100.0 * st.global_step / st.total, 2), loss=loss, lr=lr,
                         rate=round(rate, 3), eta_seconds=round(remaining / rate, 1) if rate > 0 else None)
        if self.cfg.report_to != "none":
            st.accelerator.log({"train_loss": loss, "lr": lr}, step=st.global_step)

    def _after_sync(self, st: _LoopState) -> str | None:
        cmd = self.control.take()
        if st.accelerator.num_processes > 1:  # every process must act on the main process's commands, same step
            cmd = _broadcast_commands(st.accelerator, cmd)
        if cmd["cancel"]:
            return "cancelled"
        cfg = self.cfg
        due = cfg.checkpoint_step_interval and st.global_step % cfg.checkpoint_step_interval == 0
        due = due or _epoch_ends(st, cfg.checkpoint_epoch_interval)
        if (due or cmd["checkpoint"]) and st.global_step < st.total:
            self._checkpoint(st)
        if cmd["validate"] or (self._validation_due(st) and st.global_step < st.total):
            self._validate(st, forced=cmd["validate"])
        if self._eval_due(st):
            self._evaluate(st)
        if cmd["stop"]:
            return "stopped"
        return None

    def _checkpoint(self, st: _LoopState) -> Path:
        with self.stages.scoped("checkpoint_save", f"checkpoint-{st.global_step}", step=st.global_step):
            return self._save_checkpoint(st)

    def _save_checkpoint(self, st: _LoopState) -> Path:
        manifest = checkpoint_manifest(
            self.cfg, epoch=st.epoch, step_in_epoch=st.step_in_epoch, seed=st.seed, fingerprint=st.fingerprint,
            adapter=st.adapter.hyperparameters if st.adapter is not None else None, job_id=self.job_id)
        acc = st.accelerator
        if acc.is_main_process:
            begin_checkpoint(self.output_dir, st.global_step)
        acc.wait_for_everyone()
        tmp = staging_dir(self.output_dir, st.global_step)
        acc.save_state(str(tmp))  # every process: accelerate writes shared state once, RNG state per process
        acc.wait_for_everyone()
        path = self.output_dir / f"checkpoint-{st.global_step}"
        if acc.is_main_process:
            path = finish_checkpoint(self.output_dir, st.global_step, tmp, manifest,
                                     keep=self.cfg.checkpoints_total_limit)
        acc.wait_for_everyone()
        st.last_checkpoint = st.global_step
        self.events.emit("checkpoint.saved", step=st.global_step, path=str(path))
        if self.hooks is not None:
            self.hooks.checkpoint_saved(path, st.global_step, self.losses, self.lrs)
        return path

    def _validation_due(self, st: _LoopState, final: bool = False) -> bool:
        cfg = self.cfg
        if cfg.validation_disable or not cfg.validation_prompt:
            return False
        if final:
            return True
        by_step = bool(cfg.validation_step_interval) and st.global_step % cfg.validation_step_interval == 0
        return by_step or _epoch_ends(st, cfg.validation_epoch_interval)

    # -- eval loss --------------------------------------------------------------------------------------------
    def _setup_eval(self, family: Any, plan: Any) -> None:
        if not plan.eval_samples:
            return
        if not evaluation.supports_fixed_timesteps(family):
            self.events.log(f"{self.family.name}'s loss() takes no timesteps=, so no eval loss is computed",
                            level="warning")
            return
        self.eval_batches = evaluation.eval_batches(plan.eval_samples, self.cfg.train_batch_size)
        self.events.log(f"eval loss over {len(plan.eval_samples)} held-out images at "
                        f"{self.cfg.eval_timesteps} fixed timesteps")

    def _eval_due(self, st: _LoopState) -> bool:
        cfg = self.cfg
        if not self.eval_batches:
            return False
        every = cfg.eval_steps_interval or cfg.validation_step_interval
        return (bool(every) and st.global_step % every == 0) or _epoch_ends(st, cfg.eval_epoch_interval)

    def _evaluate(self, st: _LoopState) -> float | None:
        """Eval loss on the main process (the others wait), as a ``training.metric`` event and tracker value."""
        value = None
        if st.accelerator.is_main_process:
            model = st.accelerator.unwrap_model(st.model)
            caches, texts = self._caches

            def load(batch: list[Any]) -> tuple[Any, Any]:
                import torch

                device = st.accelerator.device
                self._ensure_latents(caches, batch)
                lat = torch.stack([caches[s.dataset_id].load(s) for s in batch]).to(device)
                embeds = [texts.load(s.caption) for s in batch]
                return lat, {k: torch.stack([e[k] for e in embeds]).to(device) for k in embeds[0]}

            value = evaluation.eval_loss(st.family, model, self.eval_batches, load, timesteps=self.cfg.eval_timesteps,
                                         seed=st.seed, device=st.accelerator.device)
            self.eval_losses.append((st.global_step, value))
            if self.hooks is not None:
                self.hooks.eval_losses = self.eval_losses
            self.events.emit("training.metric", step=st.global_step, metrics={"eval_loss": value})
        if self.cfg.report_to != "none" and value is not None:
            st.accelerator.log({"eval_loss": value}, step=st.global_step)
        st.accelerator.wait_for_everyone()
        return value

    def _ensure_latents(self, caches: dict[str, Any], samples: list[Any]) -> None:
        """With vae_cache_ondemand: encode (and cache) the latents of ``samples`` not seen yet."""
        if self._on_demand is None:
            return
        read, encode = self._on_demand
        todo: dict[str, list[Any]] = {}
        for s in samples:
            if not caches[s.dataset_id].knows(s):
                todo.setdefault(s.dataset_id, []).append(s)
        for ds_id, group in todo.items():
            caches[ds_id].ensure(group, read, encode, batch_size=self.cfg.vae_batch_size)

    def _validate(self, st: _LoopState, forced: bool = False) -> None:
        cfg = self.cfg
        if not cfg.validation_prompt or cfg.validation_disable:
            self.events.log("validation requested but no validation_prompt is set", level="warning")
            return
        if st.accelerator.is_main_process:  # one process renders; the others wait at the barrier
            self.events.emit("validation.started", step=st.global_step, forced=forced)
            model = st.accelerator.unwrap_model(st.model)
            model.eval()
            context = ValidationContext(self.job_id, st.global_step, hooks=self.hooks)
            if self.previews is not None:
                from simpletuner_core.training.preview import PreviewPublisher

                context.preview = PreviewPublisher(self.events, self.previews, every=cfg.validation_preview_steps,
                                                   prompt=cfg.validation_prompt, global_step=st.global_step)
            try:
                method = self.registry.validation_methods.get(cfg.validation_method)
                images = method.run(st.family, model, cfg, st.global_step, context=context)
            finally:
                model.train()
            publish_images(self.events, images, self.output_dir, step=st.global_step,
                           prompt=cfg.validation_prompt, final=st.global_step >= st.total, forced=forced)
        st.accelerator.wait_for_everyone()


@attrs.define
class _LoopState:
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    family: Any
    adapter: Any
    ema: Any
    params: list[Any]
    seed: int
    total: int
    steps_per_epoch: int
    global_step: int
    epoch: int
    step_in_epoch: int
    fingerprint: str = ""
    last_checkpoint: int = -1


def _epoch_ends(st: _LoopState, every: int | None) -> bool:
    """This optimizer step closes an epoch whose 1-based number is a multiple of ``every``."""
    return bool(every) and st.step_in_epoch == st.steps_per_epoch and (st.epoch + 1) % every == 0


class _Rate:
    """Steps per second, smoothed, excluding the first step (compile/warm-up)."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.rate = 0.0

    def tick(self) -> float:
        now = time.perf_counter()
        if self.last is not None:
            inst = 1.0 / max(now - self.last, 1e-9)
            self.rate = inst if self.rate == 0 else 0.9 * self.rate + 0.1 * inst
        self.last = now
        return self.rate


def plan_only(cfg: Any, home: Path, registry: Any | None = None) -> Any:
    """The preflight plan without loading a model (``simpletuner config validate``, ``jobs submit --dry-run``)."""
    from simpletuner_core.plugins import get_registry

    reg = registry or get_registry()
    return make_plan(cfg, home, reg, reg.family(cfg.model_family).size_multiple, cfg.seed or 0)[1]

