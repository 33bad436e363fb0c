"""PixArt Sigma training: DDPM ε or v-prediction with learned-sigma output, T5 text features."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from simpletuner_core.training.attention import apply_attention
from simpletuner_core.training.loading import (
    ModelLoadError,
    load_component,
    resolve_source,
    vae_latents,
    weights_identity,
)
from simpletuner_core.training.loss_weighting import min_snr_weights, snr_at, weighted_mse
from simpletuner_pixart import shapes

SUBFOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
LORA_TARGETS = list(shapes.LORA_TARGETS)


class PixArtSigmaTrainer:
    lora_targets = LORA_TARGETS
    supports_preview = True
    #: TAESD decodes the SD-style 4-channel latents PixArt Sigma samples in.
    preview_decoder = "madebyollin/taesd"
    #: Kept in full precision under a quantized base: input/output projections and the conditioning embedders.
    quantize_exclude = ["proj_out", "pos_embed*", "caption_projection*", "adaln_single*"]

    def __init__(self, config: Any, family: Any, cache_dir: Path) -> None:
        self.cfg = config
        self.family = family
        self.source = resolve_source(config, family, Path(cache_dir))

    def load(self, device: Any, weight_dtype: Any, log: Any) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, PixArtTransformer2DModel
        from transformers import AutoTokenizer, T5EncoderModel

        self.device = device
        self.weight_dtype = weight_dtype
        self.tokenizer = load_component(AutoTokenizer, self.source, "tokenizer")
        self.text_encoder = load_component(T5EncoderModel, self.source, "text_encoder", torch_dtype=weight_dtype)
        self.vae = load_component(AutoencoderKL, self.source, "vae", torch_dtype=weight_dtype)
        self.transformer = load_component(PixArtTransformer2DModel, self.source, "transformer")
        # Zero terminal SNR is a schedule change: the validation scheduler is built from this config and follows.
        schedule = {"rescale_betas_zero_snr": True} if self.cfg.rescale_betas_zero_snr else {}
        self.noise_scheduler = load_component(DDPMScheduler, self.source, "scheduler", **schedule)
        for module in (self.text_encoder, self.vae):
            module.requires_grad_(False).eval().to(device)
        lora = self.cfg.model_type == "lora"
        self.transformer.to(device)
        if lora and weight_dtype != torch.float32:  # full fine-tunes keep fp32 master weights
            self.transformer.to(dtype=weight_dtype)
        apply_attention(self.transformer, self.cfg.attention_mechanism, log)
        self.prediction_type = self.cfg.prediction_type or self.noise_scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ModelLoadError(f"prediction_type {self.prediction_type!r} is not supported by PixArt training")
        self.noise_scheduler.register_to_config(prediction_type=self.prediction_type)
        limit = self.tokenizer.model_max_length if self.tokenizer.model_max_length < 100_000 else 300
        self.max_length = self.cfg.tokenizer_max_length or min(300, limit)
        self.alphas = self.noise_scheduler.alphas_cumprod.to(device)
        if self.cfg.rescale_betas_zero_snr and self.prediction_type == "epsilon":
            log("warning: rescale_betas_zero_snr with ε-prediction: at zero SNR the noise is the input, so the "
                "model learns nothing there; SimpleTuner pairs it with prediction_type=v_prediction")
        log(f"loaded PixArt Sigma from {self.source}: "
            f"{sum(p.numel() for p in self.transformer.parameters()) / 1e6:.2f}M transformer params, "
            f"prediction_type={self.prediction_type}")

    def encoder_id(self, kind: str) -> str:
        extra = f"len{self.max_length}" if kind == "text" else ""
        return f"pixart:{kind}:{weights_identity(self.source)}:{self.weight_dtype}:{extra}"

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return vae_latents(self.vae, pixels, self.device)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        mask = tokens.attention_mask.to(self.device)
        embeds = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]
        return {"prompt_embeds": embeds.float(), "prompt_attention_mask": mask}

    def trainable(self) -> Any:
        return self.transformer

    def loss(self, model: Any, latents: torch.Tensor, text: dict[str, torch.Tensor],
             timesteps: torch.Tensor | None = None) -> torch.Tensor:
        bsz = latents.shape[0]
        noise = torch.randn_like(latents)
        if self.cfg.noise_offset:
            noise = noise + self.cfg.noise_offset * torch.randn(bsz, latents.shape[1], 1, 1, device=latents.device)
        last = self.noise_scheduler.config.num_train_timesteps - 1
        if timesteps is None:
            steps = torch.randint(0, last + 1, (bsz,), device=latents.device)
        else:  # fixed positions in [0, 1] of the schedule (the eval loss)
            steps = (timesteps.to(latents.device) * last).round().long().clamp(0, last)
        return self.loss_at(model, latents, text, noise, steps)

    def loss_at(self, model: Any, latents: torch.Tensor, text: dict[str, torch.Tensor], noise: torch.Tensor,
                steps: torch.Tensor) -> torch.Tensor:
        """The loss for given noise and timesteps (``loss`` draws them): MSE, min-SNR weighted with snr_gamma."""
        noisy = self.noise_scheduler.add_noise(latents, noise, steps)
        dtype = next(model.parameters()).dtype
        pred = model(noisy.to(dtype), encoder_hidden_states=text["prompt_embeds"].to(dtype),
                     encoder_attention_mask=text["prompt_attention_mask"], timestep=steps,
                     added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        if pred.shape[1] == 2 * latents.shape[1]:  # learned sigma: the variance half is not trained here
            pred = pred.chunk(2, dim=1)[0]
        if self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, steps)
        else:
            target = noise
        if self.cfg.snr_gamma:
            weights = min_snr_weights(snr_at(self.alphas, steps), self.cfg.snr_gamma, self.prediction_type,
                                      soft=self.cfg.use_soft_min_snr)
            return weighted_mse(pred, target, weights)
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    def _pipeline(self, model: Any) -> Any:
        from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

        scheduler = DPMSolverMultistepScheduler.from_config(self.noise_scheduler.config)
        return PixArtSigmaPipeline(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae,
                                   transformer=model, scheduler=scheduler)

    def save_final(self, model: Any, output_dir: Path, adapter: Any, lora_format: Any) -> list[str]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        if adapter is None:
            self._pipeline(model).save_pretrained(output_dir)
            return [str(output_dir / "model_index.json"), str(output_dir / "transformer")]
        from simpletuner_core.training.lora_io import save_adapter

        return [str(save_adapter(adapter, self.family, lora_format, output_dir))]

    @torch.no_grad()
    def validation_images(self, model: Any, config: Any, on_latents: Any = None) -> list[Any]:
        from simpletuner_core.config.rules import parse_resolution
        from simpletuner_core.training.validation import guidance_kwargs

        if config.validation_resolution:
            sizes = parse_resolution(config.validation_resolution)
        else:
            edge = int(model.config.sample_size) * 8
            sizes = [(edge, edge)]
        pipe = self._pipeline(model)
        pipe.set_progress_bar_config(disable=True)
        seed = config.validation_seed if config.validation_seed is not None else (config.seed or 0)
        images = []
        mixed = self.weight_dtype != next(model.parameters()).dtype
        # Frozen parts may be bf16/fp16 while the trained transformer is fp32: autocast bridges the dtypes.
        cast = torch.autocast(self.device.type, dtype=self.weight_dtype) if mixed else contextlib.nullcontext()
        step_kwargs: dict[str, Any] = {}
        if on_latents is not None:  # PixArt's pipeline has the legacy per-step callback(step, timestep, latents)
            def report(index: int, timestep: Any, latents: torch.Tensor) -> None:
                on_latents(index, len(pipe.scheduler.timesteps), float(timestep), latents)

            step_kwargs = {"callback": report, "callback_steps": 1}
        for width, height in sizes:
            generator = torch.Generator(device="cpu").manual_seed(seed)
            with cast:
                out = pipe(config.validation_prompt, negative_prompt=config.validation_negative_prompt or "",
                           num_inference_steps=config.validation_num_inference_steps,
                           guidance_scale=config.validation_guidance, height=height, width=width,
                           generator=generator, use_resolution_binning=False,
                           max_sequence_length=self.max_length, clean_caption=False, **step_kwargs,
                           **guidance_kwargs(pipe, config))
            images.extend(out.images)
        return images
