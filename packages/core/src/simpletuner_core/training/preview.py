"""Validation previews: intermediate sampler latents decoded by a tiny autoencoder, sent as events.

The family reports latents through ``on_latents(index, total, timestep, latents)`` (diffusers step callbacks),
already unpacked to ``(B, C, h, w)`` in the pipeline's latent space; a diffusers ``AutoencoderTiny`` (TAESD-style,
trained on those latents) turns them into small images for a fraction of the VAE's cost. Previews are
best-effort: a decoder that cannot load or decode switches them off with one warning, never failing validation.
"""

from __future__ import annotations

from typing import Any

from simpletuner_core.training.validation import png_data_url, short_prompt


def preview_steps(total: int, every: int) -> list[int]:
    """1-based sampler steps that get a preview: 1, 1+k, 1+2k, … and the last."""
    every = max(1, int(every))
    steps = list(range(1, total + 1, every))
    if total and steps[-1] != total:
        steps.append(total)
    return steps


class PreviewDecoder:
    """Loads the decoder once per run (on first use) and decodes latents to PIL images."""

    def __init__(self, source: str | None, device: Any, log: Any) -> None:
        self.source = source
        self.device = device
        self.log = log
        self.broken = source is None
        self._vae: Any = None
        if source is None:
            log("validation_preview is on but this family names no preview decoder; set "
                "--validation_preview_decoder to an AutoencoderTiny", level="warning")

    def decode(self, latents: Any) -> list[Any]:
        import torch
        from PIL import Image

        if self._vae is None:
            from diffusers import AutoencoderTiny

            self._vae = AutoencoderTiny.from_pretrained(self.source).to(self.device).eval()
            self._vae.requires_grad_(False)
        with torch.no_grad():
            config = self._vae.config  # the pipeline's own decode: latents / scaling_factor + shift_factor
            lat = latents.to(self.device, dtype=self._vae.dtype) / config.scaling_factor
            shift = getattr(config, "shift_factor", None)
            if shift:
                lat = lat + shift
            pixels = self._vae.decode(lat).sample
        pixels = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        return [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]

    def safe_decode(self, latents: Any) -> list[Any]:
        if self.broken:
            return []
        try:
            return self.decode(latents)
        except Exception as exc:
            self.broken = True
            self.log(f"validation previews are off for this run: decoder {self.source!r} failed "
                     f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", level="warning")
            return []


def decoder_for(family: Any, cfg: Any, family_name: str, device: Any, log: Any) -> PreviewDecoder | None:
    """The run's preview decoder, or None (with a warning) when the family cannot report latents."""
    if not getattr(family, "supports_preview", False):
        log(f"validation_preview: {family_name} does not report intermediate latents; previews are off",
            level="warning")
        return None
    return PreviewDecoder(cfg.validation_preview_decoder or getattr(family, "preview_decoder", None), device, log)


class PreviewPublisher:
    """The ``on_latents`` callback for one validation run: emits ``validation.image`` (intermediary) events."""

    def __init__(self, emitter: Any, decoder: PreviewDecoder, *, every: int, prompt: str, global_step: int) -> None:
        self.emitter = emitter
        self.decoder = decoder
        self.every = every
        self.prompt = prompt
        self.global_step = global_step
        self.sent: list[int] = []

    def __call__(self, index: int, total: int, timestep: Any, latents: Any) -> None:
        step = index + 1
        if step not in preview_steps(total, self.every):
            return
        images = self.decoder.safe_decode(latents[:1])
        if not images:
            return
        image = images[0]
        label = f"{step}/{total}"
        self.sent.append(step)
        self.emitter.emit("validation.image", title=f"Validation (step {label}): {short_prompt(self.prompt)}",
                          body=self.prompt, step=step, timestep=float(timestep), resolution=list(image.size),
                          validation_type="intermediary", prompt=self.prompt, step_label=label,
                          global_step=self.global_step,
                          images=[{"src": png_data_url(image), "mime_type": "image/png"}])
