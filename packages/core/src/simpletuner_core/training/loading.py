"""Loading a family's weights: a flavour's offline builder, a local diffusers directory, or a hub id.

Shared by every model family (one model package never imports another), so the error a user sees for a missing
download or a half-copied directory is the same whatever the model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


class ModelLoadError(RuntimeError):
    """Weights could not be loaded; the message says what to do."""


def resolve_source(cfg: Any, family: Any, cache_dir: Path) -> str:
    """The configured path/hub id, else the flavour's offline build or hub id."""
    if cfg.pretrained_model_name_or_path:
        return cfg.pretrained_model_name_or_path
    flavour = family.flavours[cfg.model_flavour or family.default_flavour]
    if flavour.build is not None:
        return str(flavour.build(cache_dir))
    return flavour.hub_id


#: Components whose weights never reach a cache: the trained denoiser and the scheduler's config.
_NOT_CACHED = ("transformer", "unet", "scheduler")
_FIRST = ("vae", "text_encoder", "tokenizer")  # the historical order: PixArt's cache keys stay as they were


def cached_components(path: Path) -> list[str]:
    """The subfolders whose weights shape cached latents and text embeds: every component ``model_index.json``
    lists (every subfolder without one), less the denoiser and the scheduler."""
    try:
        index = json.loads((path / "model_index.json").read_text())
        names = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)]
    except (OSError, ValueError, AttributeError):
        names = [p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    names = [n for n in names if n not in _NOT_CACHED]
    return [n for n in _FIRST if n in names] + sorted(n for n in names if n not in _FIRST)


def weights_identity(source: str) -> str:
    """Stable id of the weights for cache keys: local dirs by their components' file sizes and times (every
    encoder, e.g. Flux's T5 in ``text_encoder_2``), hub ids by name."""
    path = Path(source)
    if not path.is_dir():
        return source
    parts = []
    for sub in cached_components(path):
        for f in sorted((path / sub).glob("*")) if (path / sub).is_dir() else []:
            stat = f.stat()
            parts.append(f"{sub}/{f.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def load_component(cls: Any, source: str, subfolder: str, **kwargs: Any) -> Any:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    try:
        return cls.from_pretrained(source, subfolder=subfolder, local_files_only=offline, **kwargs)
    except (OSError, ValueError) as exc:
        local = Path(source).expanduser()
        if local.exists():
            raise ModelLoadError(f"{local} is not a complete diffusers directory: cannot load {subfolder!r} "
                                 f"({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from exc
        raise ModelLoadError(
            f"cannot load {source!r} ({subfolder}) from the Hugging Face Hub and it is not in the local cache: "
            f"{str(exc).splitlines()[0]}. Download it once with network access (`huggingface-cli download "
            f"{source}`, after `huggingface-cli login` for gated repos), set HF_ENDPOINT for a mirror, or set "
            f"--pretrained_model_name_or_path to a local diffusers directory."
        ) from exc


def vae_latents(vae: Any, pixels: Any, device: Any) -> Any:
    """(B,3,H,W) in [-1,1] → float32 latents in the denoiser's space: ``(mean - shift) * scale``. The posterior
    mean, not a sample, so the same image always gives the same latent (caches are content-addressed)."""
    latents = vae.encode(pixels.to(device, dtype=vae.dtype)).latent_dist.mode()
    cfg = vae.config
    return ((latents - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor).float()
