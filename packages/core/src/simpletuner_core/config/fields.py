"""Core's training config keys: one frozen attrs class, each field with its help text.

Keys are the tutorial's flat ``--key`` names. Plugin-contributed keys are added by
:func:`simpletuner_core.config.model.config_class` on top of :class:`CoreConfig`.
"""

from __future__ import annotations

from typing import Any

import attrs


def f(default: Any, help: str, choices: tuple[Any, ...] = ()) -> Any:
    return attrs.field(default=default, metadata={"help": help, "choices": choices})


@attrs.frozen(kw_only=True)
class CoreConfig:
    config_version: int = f(2, "Schema version of this config; older configs are migrated on load.")
    # --- model --------------------------------------------------------------------------------------------
    model_family: str | None = f(None, "Model family (see `simpletuner models list`), e.g. pixart_sigma.")
    model_flavour: str | None = f(None, "Flavour of the family: a known hub id, or `tiny` built offline.")
    model_type: str = f("full", "Train every weight (`full`) or an adapter (`lora`).", ("full", "lora"))
    lora_type: str = f("standard", "Adapter kind when model_type=lora (standard = peft LoRA, lycoris).")
    pretrained_model_name_or_path: str | None = f(None, "Hub id or local diffusers directory; default: flavour.")
    prediction_type: str | None = f(None, "Override the family's target: epsilon or v_prediction (DDPM families); "
                                          "flow_matching (flow families: their only target).",
                                    (None, "epsilon", "v_prediction", "flow_matching"))
    tokenizer_max_length: int | None = f(None, "Text token limit; default: the family's.")
    # --- data -------------------------------------------------------------------------------------------------
    data_backend_config: str | None = f(None, "Dataloader JSON (relative paths resolve under config/).")
    resolution: float | None = f(1024.0, "Default dataset resolution when a dataset gives none.")
    resolution_type: str | None = f("pixel_area", "Default resolution_type.", (None, "pixel", "area", "pixel_area"))
    cache_dir_vae: str | None = f(None, "Default VAE latent cache directory for datasets that set none.")
    cache_dir_text: str | None = f(None, "Default text-embed cache directory.")
    caption_strategy: str | None = f(None, "Default caption_strategy of image datasets that set none (textfile, "
                                           "filename, instanceprompt; SimpleTuner's instance_prompt too); unset: "
                                           "textfile.")
    instance_prompt: str | None = f(None, "Default instance_prompt of image datasets that set none.")
    caption_dropout_probability: float = f(0.1, "Probability of training a sample with an empty caption.")
    vae_batch_size: int = f(4, "Images per VAE encode batch while filling the latent cache.")
    vae_cache_ondemand: bool = f(False, "Encode latents as batches are drawn instead of caching every image first "
                                        "(SimpleTuner's inverse vae_cache_preprocess).")
    minimum_image_size: float | None = f(None, "Default minimum_image_size for datasets that set none (pixels, "
                                               "megapixels or area as the dataset's resolution_type).")
    disable_bucket_pruning: bool = f(False, "Keep aspect buckets that cannot fill a batch (their samples repeat) "
                                            "instead of dropping them.")
    aspect_bucket_rounding: int | None = f(2, "Decimal places aspect ratios are rounded to when grouping buckets.")
    dataloader_prefetch: bool = f(False, "Load the next batch from the cache while the current one trains.")
    conditioning_multidataset_sampling: str = f(
        "random", "How several conditioning datasets are sampled.", ("random", "combined")
    )
    # --- output ---------------------------------------------------------------------------------------------
    output_dir: str | None = f(None, "Where checkpoints and final weights go.")
    lora_format: str = f("diffusers", "Key layout of exported LoRA weights: diffusers (load_lora_weights) or "
                                      "comfyui (kohya-style lora_unet_ keys).")
    # --- schedule ------------------------------------------------------------------------------------------
    train_batch_size: int = f(4, "Samples per micro-batch per process.")
    gradient_accumulation_steps: int = f(1, "Micro-batches per optimizer step.")
    max_train_steps: int = f(0, "Optimizer steps to train; exactly one of this and num_train_epochs is > 0.")
    num_train_epochs: int = f(0, "Epochs to train; exactly one of this and max_train_steps is > 0.")
    num_machines: int = f(1, "Machines a multi-node job spans (passed to accelerate/torchrun).")
    machine_rank: int = f(0, "This machine's rank in a multi-node job (0 = the main node).")
    main_process_ip: str = f("127.0.0.1", "Address of the rank-0 machine for the multi-node rendezvous.")
    main_process_port: int = f(29500, "Port of the multi-node rendezvous on the rank-0 machine.")
    seed: int | None = f(None, "Seed for data order and noise; a random one is chosen and recorded when unset.")
    # --- optimisation ------------------------------------------------------------------------------------
    learning_rate: float = f(4e-7, "Peak learning rate.")
    optimizer: str = f("adamw_bf16", "Optimizer name (see `simpletuner plugins`).")
    lr_scheduler: str = f("constant_with_warmup", "Learning-rate schedule name.")
    lr_warmup_steps: int = f(0, "Linear warm-up steps.")
    lr_num_cycles: int = f(1, "Cycles for cosine_with_restarts.")
    lr_power: float = f(0.8, "Power for the polynomial schedule.")
    adam_beta1: float = f(0.9, "Adam beta1.")
    adam_beta2: float = f(0.999, "Adam beta2.")
    optimizer_beta1: float | None = f(None, "beta1 of any optimizer with betas (Adam kinds, Lion, Prodigy); wins "
                                            "over adam_beta1. Unset: adam_beta1 (Lion: its own 0.9).")
    optimizer_beta2: float | None = f(None, "beta2 of any optimizer with betas; wins over adam_beta2. Unset: "
                                            "adam_beta2 (Lion: its own 0.99).")
    adam_weight_decay: float = f(1e-2, "Decoupled weight decay.")
    adam_epsilon: float = f(1e-8, "Adam epsilon.")
    max_grad_norm: float = f(2.0, "Gradient clipping threshold; 0 disables clipping.")
    grad_clip_method: str = f("value", "Clip each gradient element to ±max_grad_norm (value) or the total norm "
                                       "(norm).", ("value", "norm"))
    mixed_precision: str = f("auto", "Autocast precision; auto = bf16 on GPU, no on CPU.", ("auto", "no", "bf16", "fp16"))
    base_model_precision: str = f("no_change", "Precision of frozen weights: no_change, fp32, bf16, fp16, or a quantizer.")
    quantize_via: str = f("accelerator", "Where quantization runs.", ("cpu", "accelerator"))
    gradient_checkpointing: bool = f(True, "Recompute activations in backward to save memory.")
    gradient_checkpointing_interval: int | None = f(None, "Checkpoint only every Nth transformer block (faster, "
                                                          "more memory); default: every block.")
    attention_mechanism: str = f("diffusers", "Attention kernel: diffusers/sdpa (torch SDPA) or, when installed, xformers or a sageattention variant.", ("diffusers", "sdpa", "xformers", "sageattention", "sageattention-int8-fp16-triton", "sageattention-int8-fp16-cuda", "sageattention-int8-fp8-cuda"))
    use_ema: bool = f(False, "Keep an exponential moving average of trained weights.")
    ema_decay: float = f(0.995, "EMA decay per optimizer step.")
    noise_offset: float = f(0.0, "Offset noise strength.")
    snr_gamma: float | None = f(None, "Min-SNR loss weighting gamma (ε/v-prediction families); unset = off.")
    use_soft_min_snr: bool = f(False, "Soft min-SNR weighting (needs snr_gamma).")
    rescale_betas_zero_snr: bool = f(False, "Rescale the noise schedule to zero terminal SNR (ε/v families).")
    # --- adapters ----------------------------------------------------------------------------------------------
    lora_rank: int = f(16, "LoRA rank.")
    lora_alpha: float | None = f(None, "LoRA alpha; default: equal to lora_rank.")
    lora_dropout: float = f(0.1, "LoRA dropout.")
    lora_target_modules: str | None = f(None, "Comma-separated module names; default: the family's preset.")
    lycoris_config: str | None = f(None, "LyCORIS JSON file: algo (lokr, locon, loha, full), factor, "
                                         "linear_dim, apply_preset (a dict or a family preset name).")
    init_lora: str | None = f(None, "Adapter file to start from (.safetensors; diffusers, comfyui or LyCORIS "
                                    "keys, detected from the file).")
    # --- checkpoints ------------------------------------------------------------------------------------------
    checkpoint_step_interval: int = f(500, "Save a checkpoint every N optimizer steps; 0 disables "
                                           "(SimpleTuner's legacy name: checkpointing_steps).")
    checkpoint_epoch_interval: int | None = f(None, "Also save a checkpoint every N epochs; unset = off.")
    checkpoints_total_limit: int | None = f(5, "Keep at most N checkpoints (oldest removed after a new one).")
    resume_from_checkpoint: str | None = f("latest", "`latest` or a checkpoint directory.")
    # --- validation -------------------------------------------------------------------------------------------
    validation_step_interval: int = f(100, "Validate every N optimizer steps when a validation_prompt is set "
                                           "(legacy name: validation_steps).")
    validation_epoch_interval: int | None = f(None, "Also validate every N epochs; unset = off.")
    validation_prompt: str | None = f(None, "Prompt rendered at each validation.")
    validation_negative_prompt: str | None = f("blurry, cropped, ugly", "Negative prompt for validation.")
    validation_guidance: float = f(7.5, "Classifier-free guidance scale for validation.")
    validation_resolution: str | None = f(None, "WxH or a single edge, e.g. 1024x1024; default: the model's native size.")
    validation_num_inference_steps: int = f(30, "Sampler steps for validation.")
    validation_seed: int | None = f(None, "Seed for validation images; default: seed.")
    validation_disable: bool = f(False, "Never run validation.")
    validation_guidance_rescale: float = f(0.0, "Guidance rescale (φ) for validation; 0 = off.")
    validation_disable_unconditional: bool = f(False, "Skip the unconditional validation image.")
    validation_prompt_library: bool = f(False, "Also render the built-in library of validation prompts.")
    user_prompt_library: str | None = f(None, "JSON file of named validation prompts ({\"name\": \"prompt\"}).")
    disable_benchmark: bool = f(False, "Skip the base-model validation before the first step.")
    num_eval_images: int = f(4, "At most this many samples of the eval dataset(s) are used for the eval loss.")
    eval_dataset_id: str | None = f(None, "The eval dataset (dataloader id of a dataset_type=eval entry); "
                                          "default: every eval dataset.")
    eval_steps_interval: int | None = f(None, "Compute the eval loss every N optimizer steps; default: with "
                                              "validation.")
    eval_epoch_interval: int | None = f(None, "Compute the eval loss every N epochs; unset = off.")
    eval_loss_disable: bool = f(False, "Never compute the eval loss.")
    eval_timesteps: int = f(28, "Timesteps the eval loss is averaged over.")
    validation_method: str = f("pipeline", "Validation method name (pipeline, external-script).")
    validation_noise_scheduler: str | None = f(None, "Scheduler override for validation.")
    validation_external_script: str | None = f(None, "Command run by validation_method=external-script "
                                                     "(argv, no shell; {placeholders} as in docs/hooks.md).")
    validation_external_background: bool = f(False, "Run the external validation script without waiting for it.")
    validation_preview: bool = f(False, "Emit intermediate validation previews.")
    validation_preview_steps: int = f(1, "Preview every N sampler steps (the first and last are always sent).")
    validation_preview_decoder: str | None = f(
        None, "AutoencoderTiny (hub id or local dir) that decodes previews; default: the family's.")
    post_checkpoint_script: str | None = f(None, "Command run (in the background) after each checkpoint is "
                                                 "written; {placeholders} as in docs/hooks.md.")
    post_upload_script: str | None = f(None, "Command run after each successful upload, once per publisher.")
    hook_script_timeout: float = f(600.0, "Seconds a hook script may run before it is killed.")
    hook_script_fatal: bool = f(False, "A failing foreground hook script (external validation) fails the job.")
    # --- tracking and publishing ----------------------------------------------------------------------------
    report_to: str = f("none", "Tracker.", ("none", "tensorboard", "wandb", "comet", "all"))
    tracker_project_name: str = f("simpletuner", "Tracker project name.")
    tracker_run_name: str | None = f(None, "Tracker run name; default: the job id.")
    webhook_config: Any = f(None, "Webhook targets (JSON list or a JSON string of one).")
    webhook_reporting_interval: float | None = f(None, "At most one training.status webhook per N seconds "
                                                       "(the last step is always sent); default: every step.")
    push_to_hub: bool = f(False, "Upload the final model to the hub.")
    push_checkpoints_to_hub: bool = f(False, "Publish checkpoints too (to the hub and every other publisher).")
    hub_model_id: str | None = f(None, "Hub repository for uploads.")
    model_card_private: bool = f(True, "Create the hub repository as private (an existing repo keeps its "
                                       "visibility); old name: hub_private.")
    model_card_note: str | None = f(None, "Text placed at the top of the generated model card.")
    publish_timeout: float = f(14400.0, "Seconds one upload (one publisher, one checkpoint or the final model) "
                                        "may take before it is reported failed and left behind; 0 = no limit.")
    publish_local_dir: str | None = f(None, "Copy the final model (and checkpoints with push_checkpoints_to_hub) "
                                            "into this directory.")
    # --- processes ----------------------------------------------------------------------------------------------
    num_processes: int = f(1, "Trainer processes for a queued job (one per GPU); above 1 the runner launches them "
                              "with torchrun, or with `accelerate launch` when accelerate_config is set.")
    accelerate_config: str | None = f(None, "accelerate config file for multi-process launches by the runner.")
    clip_skip: int = f(0, "Skip the last N CLIP layers (families with a CLIP encoder); 0 = off.")


def core_field_names() -> list[str]:
    return [a.name for a in attrs.fields(CoreConfig)]
