"""Flux / Flux Kontext training: rectified flow matching on packed 2×2 latents, T5 + CLIP text features.

Kontext adds reference latents: each reference image is encoded like a target, packed, and concatenated after the
noisy target tokens along the sequence axis, with position ids whose first axis is set to mark them as context.
The transformer's prediction is sliced back to the target tokens before the loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from simpletuner_core.training.loading import (
    ModelLoadError,
    load_component,
    resolve_source,
    vae_latents,
    weights_identity,
)
from simpletuner_flux import tread
from simpletuner_flux.lora_targets import LYCORIS_PRESETS, preset_targets
from simpletuner_flux.packing import latent_ids, pack, unpack

#: SimpleTuner's default Flux LoRA target set ("all"): attention projections of both block kinds.
LORA_TARGETS = preset_targets("all")
__all__ = ["LORA_TARGETS", "LYCORIS_PRESETS", "FluxTrainer"]


class FluxTrainer:
    lora_targets = LORA_TARGETS
    supports_preview = True
    #: Flux's tiny autoencoder (16 latent channels) for validation previews.
    preview_decoder = "madebyollin/taef1"
    lycoris_presets = LYCORIS_PRESETS
    #: Kept in full precision under a quantized base: the input/output projections and the embedders.
    quantize_exclude = ["proj_out", "x_embedder", "context_embedder", "norm_out*", "time_text_embed*"]

    def __init__(self, config: Any, family: Any, cache_dir: Path) -> None:
        self.cfg = config
        self.family = family
        self.flavour = family.flavours.get(config.model_flavour or family.default_flavour)
        self.kontext = self.flavour is not None and "reference_conditioning" in self.flavour.features
        self.source = resolve_source(config, family, Path(cache_dir))
        self.validation_reference: Any = None
        self.validation_size: tuple[int, int] | None = None
        self.lora_targets = self.targets_for(config)
        self.fused = bool(getattr(config, "fuse_qkv_projections", False)
                          or getattr(config, "fused_qkv_projections", False))
        self.tread_spans: list[tuple[float, int, int]] = []

    @classmethod
    def targets_for(cls, config: Any) -> list[str]:
        """``flux_lora_target``'s preset (``lora_target_modules``, when set, still wins inside the adapter)."""
        return preset_targets(getattr(config, "flux_lora_target", None) or "all")

    # -- loading ----------------------------------------------------------------------------------------------
    def load(self, device: Any, weight_dtype: Any, log: Any) -> None:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

        self.device, self.weight_dtype = device, weight_dtype
        self.tokenizer = load_component(CLIPTokenizer, self.source, "tokenizer")
        self.text_encoder = load_component(CLIPTextModel, self.source, "text_encoder", torch_dtype=weight_dtype)
        self.tokenizer_2 = load_component(AutoTokenizer, self.source, "tokenizer_2")
        self.text_encoder_2 = load_component(T5EncoderModel, self.source, "text_encoder_2", torch_dtype=weight_dtype)
        self.vae = load_component(AutoencoderKL, self.source, "vae", torch_dtype=weight_dtype)
        self.transformer = load_component(FluxTransformer2DModel, self.source, "transformer")
        self.noise_scheduler = load_component(FlowMatchEulerDiscreteScheduler, self.source, "scheduler")
        for module in (self.text_encoder, self.text_encoder_2, self.vae):
            module.requires_grad_(False).eval().to(device)
        self.transformer.to(device)
        if self.cfg.model_type == "lora" and weight_dtype != torch.float32:
            self.transformer.to(dtype=weight_dtype)
        self._speedups(log)
        layers = self.text_encoder.config.num_hidden_layers
        if self.cfg.clip_skip >= layers:
            raise ModelLoadError(f"clip_skip {self.cfg.clip_skip} cannot apply: the CLIP text encoder of "
                                 f"{self.source} has {layers} layers; use at most {layers - 1}")
        limit = self.tokenizer_2.model_max_length if self.tokenizer_2.model_max_length < 100_000 else 512
        self.max_length = self.cfg.tokenizer_max_length or min(512, limit)
        self.guidance = bool(self.transformer.config.guidance_embeds)
        log(f"loaded Flux{' Kontext' if self.kontext else ''} from {self.source}: "
            f"{sum(p.numel() for p in self.transformer.parameters()) / 1e6:.2f}M transformer params, "
            f"guidance embedding {'on' if self.guidance else 'off'}, clip_skip {self.cfg.clip_skip}")

    def _speedups(self, log: Any) -> None:
        """attention_mechanism, fused QKV and TREAD routing, applied to the freshly loaded transformer."""
        from simpletuner_core.config.errors import ConfigError, ConfigInvalid
        from simpletuner_core.training.attention import apply_attention

        apply_attention(self.transformer, self.cfg.attention_mechanism, log)
        if self.fused:
            self.transformer.fuse_qkv_projections()
            log("fused QKV projections: to_qkv / to_added_qkv (saved unfused)")
        config = getattr(self.cfg, "tread_config", None)
        if config is not None:
            blocks = len(self.transformer.transformer_blocks) + len(self.transformer.single_transformer_blocks)
            try:
                self.tread_spans = tread.resolve(tread.parse_routes(config), blocks)
            except ValueError as exc:
                raise ConfigInvalid([ConfigError("tread_config", str(exc))]) from None
            tread.install(self.transformer, self.tread_spans)
            log("TREAD routing: " + ", ".join(f"blocks {a}..{b} see {1 - r:.0%} of the image tokens"
                                              for r, a, b in self.tread_spans))

    def encoder_id(self, kind: str) -> str:
        extra = f"len{self.max_length}:skip{self.cfg.clip_skip}" if kind == "text" else ""
        return f"flux:{kind}:{weights_identity(self.source)}:{self.weight_dtype}:{extra}"

    # -- encoding ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return vae_latents(self.vae, pixels, self.device)

    @torch.no_grad()
    def _pooled(self, prompts: list[str]) -> torch.Tensor:
        """CLIP's pooled output; with ``clip_skip`` N, pooled from the hidden state N layers before the last."""
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids.to(self.device)
        out = self.text_encoder(tokens, output_hidden_states=self.cfg.clip_skip > 0)
        if not self.cfg.clip_skip:
            return out.pooler_output
        # transformers 5 flattened CLIPTextModel (no ``.text_model``); older releases nest it.
        norm = getattr(self.text_encoder, "text_model", self.text_encoder).final_layer_norm
        hidden = norm(out.hidden_states[-(self.cfg.clip_skip + 1)])
        eos = (tokens == self.tokenizer.eos_token_id).int().argmax(dim=-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), eos]

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer_2(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                                  return_tensors="pt").input_ids.to(self.device)
        embeds = self.text_encoder_2(tokens)[0]
        return {"prompt_embeds": embeds.float(), "pooled_prompt_embeds": self._pooled(prompts).float()}

    def trainable(self) -> Any:
        return self.transformer

    # -- loss ------------------------------------------------------------------------------------------------
    def _sigmas(self, bsz: int, device: Any) -> torch.Tensor:
        if self.cfg.flux_sigma_sampling == "shifted":
            u = torch.rand(bsz, device=device)
            shift = self.cfg.flow_schedule_shift
            return shift * u / (1 + (shift - 1) * u)
        return torch.sigmoid(torch.randn(bsz, device=device))  # logit-normal(0, 1), SD3's default

    def loss(self, model: Any, latents: torch.Tensor, text: dict[str, torch.Tensor],
             conditioning: list[torch.Tensor] | None = None, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        bsz, _, height, width = latents.shape
        noise = torch.randn_like(latents)
        if self.cfg.noise_offset:
            noise = noise + self.cfg.noise_offset * torch.randn(bsz, latents.shape[1], 1, 1, device=latents.device)
        # fixed positions in [0, 1] (the eval loss) are the flow-matching sigmas themselves
        sigma = self._sigmas(bsz, latents.device) if timesteps is None else timesteps.to(latents.device).float()
        s = sigma.view(bsz, 1, 1, 1)
        noisy = (1 - s) * latents + s * noise
        target = pack(noise - latents)
        dtype = next(p for p in model.parameters()).dtype
        hidden = pack(noisy)
        n_target = hidden.shape[1]
        ids = latent_ids(height // 2, width // 2, latents.device)
        if conditioning:
            if not self.kontext:
                raise ValueError("reference latents need a Kontext flavour (model_flavour kontext or tiny-kontext)")
            parts, part_ids = [hidden], [ids]
            for k, ref in enumerate(conditioning):
                ref_ids = latent_ids(ref.shape[2] // 2, ref.shape[3] // 2, latents.device)
                ref_ids[..., 0] = k + 1  # first axis marks context tokens, as in FluxKontextPipeline
                parts.append(pack(ref.to(latents.device)))
                part_ids.append(ref_ids)
            hidden, ids = torch.cat(parts, dim=1), torch.cat(part_ids, dim=0)
        embeds = text["prompt_embeds"]
        guidance = (torch.full((bsz,), self.cfg.flux_guidance_value, device=latents.device)
                    if self.guidance else None)
        extra: dict[str, Any] = {}
        if self.tread_spans and model.training and torch.is_grad_enabled():
            # Drawn last from the micro-step-seeded RNG: noise and sigma match an unrouted run, resume stays exact.
            extra["tread"] = tread.Plan(seed=int(torch.randint(0, 2**62, (1,)).item()), routable=n_target)
        pred = model(hidden_states=hidden.to(dtype), timestep=sigma.to(dtype), guidance=guidance,
                     pooled_projections=text["pooled_prompt_embeds"].to(dtype),
                     encoder_hidden_states=embeds.to(dtype),
                     txt_ids=torch.zeros(embeds.shape[1], 3, device=latents.device),
                     img_ids=ids, return_dict=False, **extra)[0]
        return F.mse_loss(pred[:, :n_target].float(), target.float(), reduction="mean")

    # -- outputs ---------------------------------------------------------------------------------------------
    def pipeline(self, model: Any) -> Any:
        from diffusers import FluxKontextPipeline, FluxPipeline

        cls = FluxKontextPipeline if self.kontext else FluxPipeline
        return cls(scheduler=self.noise_scheduler, vae=self.vae, text_encoder=self.text_encoder,
                   tokenizer=self.tokenizer, text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2,
                   transformer=model)

    def save_final(self, model: Any, output_dir: Path, adapter: Any, lora_format: Any) -> list[str]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        if adapter is None:
            if self.fused:
                unfuse_keeping_weights(model)
            self.pipeline(model).save_pretrained(output_dir)
            return [str(output_dir / "model_index.json"), str(output_dir / "transformer")]
        from simpletuner_core.training.lora_io import save_adapter

        return [str(save_adapter(adapter, self.family, lora_format, output_dir))]

    def use_validation_inputs(self, size: tuple[int, int] | None, references: list[Any]) -> None:
        """Default validation size (the first training bucket) and, for Kontext, a reference image to edit."""
        self.validation_size = size
        self.validation_reference = references[0] if references else None

    @staticmethod
    def _preview(on_latents: Any, pipe: Any, config: Any, height: int, width: int) -> Any:
        """diffusers' step callback → ``on_latents`` with latents unpacked to ``(B, C, h, w)``."""
        rows = 2 * (height // (pipe.vae_scale_factor * 2))
        cols = 2 * (width // (pipe.vae_scale_factor * 2))

        def report(_pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            on_latents(index, config.validation_num_inference_steps, float(timestep),
                       unpack(tensors["latents"], rows, cols))
            return tensors

        return report

    def _true_cfg(self, config: Any, dtype: Any) -> dict[str, Any]:
        """True classifier-free guidance (a second, negative-prompt pass per step) when validation_guidance_real
        > 1; Flux dev's distilled guidance (validation_guidance) applies either way. Empty negative: unconditional."""
        scale = float(getattr(config, "validation_guidance_real", 1.0) or 1.0)
        if scale <= 1.0:
            return {}
        negative = self.encode_prompts([config.validation_negative_prompt or ""])
        return {"true_cfg_scale": scale, "negative_prompt_embeds": negative["prompt_embeds"].to(dtype),
                "negative_pooled_prompt_embeds": negative["pooled_prompt_embeds"].to(dtype)}

    @torch.no_grad()
    def validation_images(self, model: Any, config: Any, on_latents: Any = None) -> list[Any]:
        from simpletuner_core.config.rules import parse_resolution
        from simpletuner_core.training.validation import guidance_kwargs

        if config.validation_resolution:
            sizes = parse_resolution(config.validation_resolution)
        else:
            sizes = [self.validation_size or (1024, 1024)]
        pipe = self.pipeline(model)
        pipe.set_progress_bar_config(disable=True)
        text = self.encode_prompts([config.validation_prompt])
        dtype = next(model.parameters()).dtype
        seed = config.validation_seed if config.validation_seed is not None else (config.seed or 0)
        images = []
        for width, height in sizes:
            kwargs: dict[str, Any] = guidance_kwargs(pipe, config)
            if on_latents is not None:
                kwargs["callback_on_step_end"] = self._preview(on_latents, pipe, config, height, width)
            kwargs.update(self._true_cfg(config, dtype))
            if self.kontext:
                kwargs.update(_auto_resize=False, max_area=width * height)  # else it renders 1024²
                if self.validation_reference is not None:
                    kwargs["image"] = self.validation_reference
            out = pipe(prompt_embeds=text["prompt_embeds"].to(dtype),
                       pooled_prompt_embeds=text["pooled_prompt_embeds"].to(dtype),
                       num_inference_steps=config.validation_num_inference_steps,
                       guidance_scale=config.validation_guidance, height=height, width=width,
                       generator=torch.Generator(device="cpu").manual_seed(seed), max_sequence_length=self.max_length,
                       **kwargs)
            images.extend(out.images)
        return images


@torch.no_grad()
def unfuse_keeping_weights(model: Any) -> None:
    """Copy trained fused ``to_qkv``/``to_added_qkv`` weights back into the separate projections, then unfuse.

    diffusers' ``unfuse_qkv_projections`` only drops the fused layers, which would lose what trained in them.
    """
    pairs = (("to_qkv", ("to_q", "to_k", "to_v")), ("to_added_qkv", ("add_q_proj", "add_k_proj", "add_v_proj")))
    for module in model.modules():
        if not getattr(module, "fused_projections", False):
            continue
        for fused, parts in pairs:
            layer = getattr(module, fused, None)
            if layer is None:
                continue
            for name, weight in zip(parts, layer.weight.chunk(3, dim=0), strict=True):
                getattr(module, name).weight.copy_(weight)
            if layer.bias is not None:
                for name, bias in zip(parts, layer.bias.chunk(3, dim=0), strict=True):
                    getattr(module, name).bias.copy_(bias)
    model.unfuse_qkv_projections()
