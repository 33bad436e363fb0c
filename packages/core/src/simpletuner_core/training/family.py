"""The contract between the generic engine and a model family's trainer class.

The engine owns the loop, optimizers, checkpoints and events; the family owns loading weights, encoding data
and computing the loss. A family plugin's ``ModelFamily.trainer()`` returns a class implementing this protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class FamilyTrainer(Protocol):
    #: Default module names for LoRA targets.
    lora_targets: list[str]
    #: True when ``validation_images`` honours ``on_latents`` (validation previews); optional, default False.
    supports_preview: bool
    #: Default AutoencoderTiny (hub id or local dir) for previews, e.g. ``madebyollin/taesd``; optional.
    preview_decoder: str | None

    def __init__(self, config: Any, family: Any, cache_dir: Path) -> None: ...

    def load(self, device: Any, weight_dtype: Any, log: Any) -> None:
        """Load tokenizer, encoders, VAE and the trainable transformer (local dir or hub id)."""

    def encoder_id(self, kind: str) -> str:
        """A string identifying the encoder (``vae`` or ``text``) and its dtype, for content-addressed caches."""

    def encode_images(self, pixels: Any) -> Any:
        """(B,3,H,W) in [-1,1] → latents (B,C,h,w) ready for the loss."""

    def encode_prompts(self, prompts: list[str]) -> dict[str, Any]:
        """Batched text features, each tensor with the batch dim first."""

    def trainable(self) -> Any:
        """The module whose weights (or adapters) train."""

    def loss(self, model: Any, latents: Any, text: dict[str, Any], timesteps: Any = None) -> Any:
        """Scalar training loss for one micro-batch; uses torch's global RNG (seeded per micro-step).

        ``timesteps`` (optional in the signature; a family without it gets no eval loss): a ``(B,)`` float tensor
        of positions in ``[0, 1]`` of the noise schedule (0 = clean, 1 = pure noise) used instead of random
        timesteps, for the deterministic eval loss (:mod:`simpletuner_core.training.evaluation`).

        Families whose flavours declare the ``reference_conditioning`` feature also accept
        ``conditioning=[latents, ...]``: one ``(B, C, h, w)`` batch of reference latents per conditioning dataset
        in use (see :mod:`simpletuner_core.training.conditioning`). It is passed only when the batch has them.
        """

    def save_final(self, model: Any, output_dir: Path, adapter: Any, lora_format: Any) -> list[str]:
        """Write final weights in diffusers layout; returns the files/directories written."""

    def validation_images(self, model: Any, config: Any, on_latents: Any = None) -> list[Any]:
        """Render ``validation_prompt`` with the current weights; returns PIL images.

        With ``on_latents`` (only passed when ``supports_preview``), call ``on_latents(index, total, timestep,
        latents)`` after every sampler step (diffusers ``callback_on_step_end`` or the legacy ``callback``), with
        ``index`` 0-based, ``total`` the number of sampler steps and ``latents`` unpacked to ``(B, C, h, w)`` in
        the pipeline's latent space (what it would hand to ``vae.decode`` before scaling; Flux-style families
        unpack their sequence layout first). Core decodes them with a tiny autoencoder.
        """

    # Optional, looked up with getattr by the engine:
    #   lycoris_presets: dict[str, dict]      named LyCORIS presets (``"default"`` when no apply_preset is given)
    #   quantize_exclude: list[str]           module patterns kept unquantized under a quantized base
    #   use_validation_inputs(size, refs)     first training bucket (w, h) and reference PIL images, before training
    #   targets_for(cfg) -> list[str]         classmethod: LoRA targets a config picks (e.g. a preset key); the
    #                                         resume check uses it, so the instance's lora_targets must agree
