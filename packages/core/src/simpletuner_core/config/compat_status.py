"""Which SimpleTuner keys are inert here and why the unsupported ones are refused (data for ``compat.py``).

A key not listed here and not one of our fields is classified by rule: another model family's key is inert; the
rest are unsupported, with the reason of their section below. Implemented keys need no entry: being a config field
is what makes a key implemented.
"""

from __future__ import annotations

#: SimpleTuner names that mean one of our keys under another name (beyond ``migrations.ALIASES``).
ALIASES: dict[str, str] = {}

#: Keys outside SimpleTuner's registry that its loader still accepts: leftovers of its web UI.
INERT_LEGACY: dict[str, str] = {
    "aspect_ratio_bucketing": "a SimpleTuner web-UI leftover; bucketing is always on here",
    "aspect_ratio_bucket_min": "a SimpleTuner web-UI leftover",
    "aspect_ratio_bucket_max": "a SimpleTuner web-UI leftover",
    "repeats": "a SimpleTuner web-UI leftover; set repeats per dataset in the dataloader JSON",
    "ez_model_type": "a SimpleTuner web-UI leftover",
}

_UI = "a SimpleTuner web-UI setting with no effect on training"
_PERF = "worker, thread and I/O batch sizes are chosen by this trainer; results do not depend on them"
_DEBUG = "extra debug output of SimpleTuner's data loader"

#: Keys with no effect on a PixArt Sigma or Flux run here.
INERT: dict[str, str] = {
    "configs_dir": "the configs directory is the server's/CLI's setting (SIMPLETUNER_HOME/config), not a job's",
    "merge_environment_config": _UI,
    "i_know_what_i_am_doing": "no safety check here can be overridden",
    "local_rank": "set by the launcher (torchrun/accelerate) for each process",
    "tracker_image_layout": _UI,
    "print_filenames": _DEBUG,
    "print_sampler_statistics": _DEBUG,
    "debug_aspect_buckets": _DEBUG,
    "debug_dataset_loader": _DEBUG,
    "aws_max_pool_connections": "no S3 data backend is installed",
    "metadata_update_interval": "dataset metadata is recomputed by each preflight",
    "aspect_bucket_worker_count": _PERF,
    "max_workers": _PERF,
    "torch_num_threads": _PERF,
    "enable_multiprocessing": _PERF,
    "read_batch_size": _PERF,
    "write_batch_size": "set write_batch_size per text_embeds dataset in the dataloader JSON",
    "image_processing_batch_size": _PERF,
    "text_encoder_batch_size": _PERF,
    "dataloader_prefetch_qlen": "prefetch (dataloader_prefetch) keeps one batch ahead",
    "compress_disk_cache": "caches use one fixed format here (safetensors)",
    "preserve_data_backend_cache": "caches are content-addressed: kept and reused unless their inputs change",
    "aspect_bucket_disable_rebuild": "buckets are recomputed by each preflight (cheap, and never stale)",
    "override_dataset_config": "dataset settings are read from the dataloader JSON at every start",
    "vae_cache_scan_behaviour": "caches are content-addressed: a changed image is re-encoded, nothing else",
    "pretrained_evaluation_model_name_or_path": "used only with evaluation_type=clip, which is not supported",
    "field_name": "an artefact of SimpleTuner's registry, not a setting",
    "sageattention_usage": "used only with a SageAttention attention_mechanism, which is not supported",
    "framerate": "video datasets only",
    "validation_num_video_frames": "video models only",
    "model_card_safe_for_work": "the generated model card carries no safe-for-work tag",
    "modelspec_comment": "no modelspec metadata is written into weight files",
    "logging_dir": "tracker logs go to output_dir/logs",
    "delete_model_after_load": "weights are not deleted from the model cache here",
    "delete_invalid_checkpoints": "checkpoints are written atomically: an incomplete one is never listed",
    "checkpointing_use_tempdir": "checkpoints are always written to a temporary directory and renamed",
    "validation_seed_source": "validation noise is drawn on the CPU from validation_seed",
    "validation_multigpu": "one process renders validation",
    "push_to_hub_background": "uploads always run in the background",
}

#: Prefix rules for inert keys (checked after INERT).
INERT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("audio_", "audio datasets only"),
    ("nsfw_check_", "used only with enable_nsfw_check, which is not supported"),
    ("deepfloyd_", "applies only to SimpleTuner's deepfloyd model family"),
)

#: Keys refused (when they ask for something) with a specific reason.
UNSUPPORTED: dict[str, str] = {
    "controlnet": "ControlNet training is not supported here",
    "controlnet_custom_config": "ControlNet training is not supported here",
    "controlnet_model_name_or_path": "ControlNet training is not supported here",
    "control": "control (conditioning-image) training is not supported here",
    "enable_nsfw_check": "NSFW filtering of datasets is not supported here",
    "delete_nsfw_images": "NSFW filtering of datasets is not supported here",
    "delete_unwanted_images": "images are never deleted from a dataset here; the preflight reports what it skips",
    "delete_problematic_images": "images are never deleted from a dataset here; the preflight reports what it skips",
    "train_text_encoder": "text encoders stay frozen here (PixArt's T5, Flux's CLIP and T5)",
    "text_encoder_lr": "text encoders stay frozen here",
    "save_text_encoder": "text encoders stay frozen here",
    "use_dora": "DoRA is not supported here; use lora_type=lycoris (locon, loha, lokr)",
    "deepspeed_config": "DeepSpeed is not supported here; multi-GPU runs use DDP (torchrun/accelerate)",
    "fsdp_enable": "FSDP is not supported here; multi-GPU runs use DDP (torchrun/accelerate)",
    "offset_noise": "offset noise is set by noise_offset alone here (applied to every sample)",
    "noise_offset_probability": "offset noise is set by noise_offset alone here (applied to every sample)",
    "lr_end": "schedules decay to 0 here",
    "evaluation_type": "CLIP-score evaluation is not supported here; the eval loss is (dataset_type eval)",
    "eval_dataset_pooling": "each eval dataset's loss is reported on its own",
    "num_validation_images": "one image per validation prompt here",
    "validation_on_startup": "the base-model validation before step 1 is on unless disable_benchmark is set",
    "validation_image_format": "validation images are PNG here",
    "validation_image_quality": "validation images are PNG (lossless) here",
    "revision": "hub revisions are not selectable here; pin a local copy with pretrained_model_name_or_path",
    "variant": "weight variants are not selectable here",
    "trust_remote_code": "remote code is never run here",
    "seed_for_each_device": "every process shares one seed here; data shards and per-step noise seeds differ",
    "gradient_precision": "gradients keep the trained weights' precision here",
    "disable_tf32": "TF32 settings are left to torch's defaults here",
    "quantization_config": "quantization is chosen with base_model_precision here",
}

#: Prefix rules for unsupported keys.
UNSUPPORTED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("crepa_", "CREPA regularisation is not supported here"),
    ("urepa_", "U-REPA regularisation is not supported here"),
    ("irepa_", "iREPA regularisation is not supported here"),
    ("scheduled_sampling_", "scheduled sampling is not supported here"),
    ("fsdp_", "FSDP is not supported here; multi-GPU runs use DDP (torchrun/accelerate)"),
    ("dynamo_", "torch.compile is not supported here"),
    ("context_parallel_", "context parallelism is not supported here"),
    ("ramtorch", "RamTorch offloading is not supported here"),
    ("group_offload_", "group offloading is not supported here"),
    ("gradient_checkpointing_offload_", "activation offloading is not supported here"),
    ("sdnq_", "SDNQ quantization is not supported here; use base_model_precision (quanto)"),
    ("timestep_bias_", "timestep bias sampling is not supported here"),
    ("validation_adapter_", "validating with extra adapters is not supported here"),
    ("assistant_lora", "assistant LoRAs are not supported here"),
    ("refiner_training", "refiner training is not supported here"),
    ("freeze_encoder", "text encoders stay frozen here"),
    ("ema_", "EMA here updates every step on the training device"),
    ("xm_", "this training objective is not supported here"),
    ("nextlat_", "this training objective is not supported here"),
    ("layersync_", "this training objective is not supported here"),
    ("mixflow_", "this training objective is not supported here"),
    ("diff2flow_", "this training objective is not supported here"),
    ("twinflow_", "this training objective is not supported here"),
    ("internal_guidance_", "this training objective is not supported here"),
    ("distillation_", "distillation is not supported here"),
    ("disk_low_", "disk-space watching is not supported here"),
    ("checkpoints_rolling_", "rolling checkpoints are not supported here; use checkpoints_total_limit"),
    ("checkpointing_rolling_", "rolling checkpoints are not supported here; use checkpoints_total_limit"),
    ("optimizer_", "this optimizer option is not supported here; optimizer_beta1/optimizer_beta2, the adam_* "
                   "keys and learning_rate are"),
    ("flow_", "this flow-matching timestep schedule is not supported here; Flux samples with "
              "flow_schedule_shift"),
    ("flux_guidance_", "Flux's guidance input is fixed per run here"),
    ("pretrained_", "separate component paths are not supported here; load the whole pipeline with "
                    "pretrained_model_name_or_path"),
)

#: The reason given for an unsupported key without its own entry, by its section in SimpleTuner's UI.
SECTION_REASONS: dict[str, str] = {
    "loss_functions": "this loss option is not supported here",
    "noise_settings": "this noise option is not supported here",
    "memory_optimization": "this memory option is not supported here",
    "quantization": "this quantization option is not supported here; use base_model_precision",
    "validation_options": "this validation option is not supported here",
    "validation_schedule": "this validation schedule option is not supported here",
    "validation_guidance": "this guidance option is not supported here",
    "lora_config": "this adapter option is not supported here",
    "accelerate": "this launcher option is not supported here",
    "text_encoder": "text encoders stay frozen here",
    "training_data": "this dataset option is not supported here",
    "caption_processing": "this caption option is not supported here; captions come from each dataset's "
                          "caption_strategy",
    "image_processing": "set this per dataset in the dataloader JSON",
    "dataset_config": "set this per dataset in the dataloader JSON",
    "dataset_defaults": "set this per dataset in the dataloader JSON",
    "vae_config": "this VAE option is not supported here",
    "model_config": "this model-loading option is not supported here",
    "architecture": "this architecture option is not supported here",
    "training_schedule": "this schedule option is not supported here",
    "learning_rate": "this learning-rate option is not supported here",
    "optimizer_config": "this optimizer option is not supported here",
    "checkpointing": "this checkpoint option is not supported here",
    "evaluation": "this evaluation option is not supported here",
    "prompt_management": "this prompt option is not supported here",
    "caching": "this cache option is not supported here",
    "data_config": "this data option is not supported here",
    "publishing_controls": "this publishing option is not supported here",
    "model_card": "this model-card option is not supported here",
    "model_specific": "this model option is not supported here",
    "project": "this project option is not supported here",
    "project_settings": "this tracker option is not supported here",
    "hardware": "this hardware option is not supported here",
    "ema_config": "this EMA option is not supported here",
}

#: Implemented keys whose default here is not SimpleTuner's registry default, each with the reason it cannot be.
DEFAULT_DIFFERENCES: dict[str, str] = {
    "mixed_precision": "`auto`: bf16 where the GPU supports it, no autocast on a CPU (SimpleTuner's `bf16` "
                       "would autocast CPU runs, where bf16 is slow and imprecise)",
    "noise_offset": "0: SimpleTuner's 0.1 acts only together with `offset_noise: true` (off by default); here "
                    "noise_offset acts by itself, so off is 0",
    "output_dir": "required: SimpleTuner's relative `simpletuner-results` would depend on the directory the "
                  "trainer starts in",
    "num_train_epochs": "0 (unset): exactly one of num_train_epochs and max_train_steps is set, and SimpleTuner's 1 "
                        "would clash with every config that sets max_train_steps",
    "cache_dir_text": "unset = `<state dir>/cache/text`: SimpleTuner's relative `cache` would depend on the "
                      "working directory",
    "caption_strategy": "unset = each dataset's own default (`textfile`)",
    "lycoris_config": "unset: LyCORIS takes lora_rank/lora_alpha/lora_dropout unless a file is named; "
                      "SimpleTuner's default names a file that need not exist",
    "validation_resolution": "unset = the model's native size; SimpleTuner's 256 is below what the real "
                             "PixArt and Flux checkpoints render well",
    "tracker_run_name": "unset = the job id, one run name per run",
}
