"""Content-addressed latent and text-embed caches.

A cache entry's name is the hash of everything that determines it (source bytes, the resize/crop plan, the
encoder), so a changed image or a changed crop re-encodes exactly that image, and nothing is ever stale. Files are
written atomically (temp name + ``os.replace``): an interrupted run leaves whole entries or none.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

    from simpletuner_core.data.preflight import Sample

_LATENT_FORMAT = "latent-v2"  # v2: high-bit-depth images are scaled, not clipped
_TEXT_FORMAT = "text-v1"
Progress = Callable[[int, int], None]


def content_key(*parts: bytes | str) -> str:
    """sha256 over the parts, each length-prefixed so ``("ab", "c")`` and ``("a", "bc")`` differ."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.hexdigest()


@attrs.frozen
class CacheStats:
    encoded: int
    reused: int
    total: int


def _entry_path(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.safetensors"


def _write_atomic(path: Path, tensors: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


class LatentCache:
    """VAE latents per sample, stored as ``<key[:2]>/<key>.safetensors`` under ``cache_dir``."""

    def __init__(self, cache_dir: Path, encoder_id: str, memory: bool = True) -> None:
        self.cache_dir = Path(cache_dir)
        self.encoder_id = encoder_id
        self.memory = memory
        self._keys: dict[Sample, str] = {}
        self._loaded: dict[str, torch.Tensor] = {}

    def key(self, sample: Sample, data: bytes) -> str:
        plan = sample.plan
        return content_key(
            _LATENT_FORMAT,
            hashlib.sha256(data).hexdigest(),
            f"resize={plan.resize_to}",
            f"crop={plan.crop_box}",
            f"target={plan.target_size}",
            f"downsampled={plan.downsampled}:{plan.downsample_size}",
            self.encoder_id,
        )

    def path(self, key: str) -> Path:
        return _entry_path(self.cache_dir, key)

    def ensure(
        self,
        samples: Sequence[Sample],
        read_bytes: Callable[[Sample], bytes],
        encode: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int,
        progress: Progress | None = None,
    ) -> CacheStats:
        """Encode what is missing (batches of one bucket), reuse the rest; encoder errors propagate."""
        import torch

        from simpletuner_core.data.images import load_pixels

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        missing: dict[tuple[int, int], dict[str, Sample]] = {}
        reused = 0
        for sample in samples:
            k = self.key(sample, read_bytes(sample))
            self._keys[sample] = k
            if k in self._loaded or self.path(k).exists():
                reused += 1
                continue
            bucket = missing.setdefault(sample.plan.target_size, {})
            if k in bucket:  # byte-identical image with an identical plan: encode once
                reused += 1
            bucket[k] = sample
        todo = sum(len(b) for b in missing.values())
        done = 0
        for bucket in missing.values():
            items = list(bucket.items())
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                pixels = torch.stack([load_pixels(s, read_bytes(s)) for _, s in chunk])
                with torch.no_grad():
                    latents = encode(pixels)
                if latents.shape[0] != len(chunk):
                    raise ValueError(f"encode returned {latents.shape[0]} latents for {len(chunk)} images")
                for (k, _), latent in zip(chunk, latents, strict=True):
                    _write_atomic(self.path(k), {"latent": latent})
                    if self.memory:
                        self._loaded[k] = latent.detach().to("cpu").clone()
                done += len(chunk)
                if progress is not None:
                    progress(done, todo)
        return CacheStats(encoded=todo, reused=reused, total=len(samples))

    def knows(self, sample: Sample) -> bool:
        """Whether :meth:`ensure` has seen ``sample`` (so :meth:`load` can serve it)."""
        return sample in self._keys

    def load(self, sample: Sample) -> torch.Tensor:
        """The latent of one sample (no batch dimension); :meth:`ensure` must have seen the sample."""
        try:
            k = self._keys[sample]
        except KeyError:
            raise KeyError(f"{sample.path}: not in the latent cache; call ensure() with this sample first") from None
        cached = self._loaded.get(k)
        if cached is not None:
            return cached
        latent = _read(self.path(k))["latent"]
        if self.memory:
            self._loaded[k] = latent
        return latent


class TextEmbedCache:
    """Text-encoder outputs per caption (a dict of tensors, e.g. ``prompt_embeds`` and ``attention_mask``)."""

    def __init__(self, cache_dir: Path, encoder_id: str, memory: bool = True) -> None:
        self.cache_dir = Path(cache_dir)
        self.encoder_id = encoder_id
        self.memory = memory
        self._loaded: dict[str, dict[str, torch.Tensor]] = {}
        self._keys: dict[str, str] = {}  # caption -> key: hashing on every lookup showed up in step profiles

    def key(self, caption: str) -> str:
        k = self._keys.get(caption)
        if k is None:
            k = self._keys[caption] = content_key(_TEXT_FORMAT, self.encoder_id, caption)
        return k

    def path(self, key: str) -> Path:
        return _entry_path(self.cache_dir, key)

    def ensure(
        self,
        captions: Sequence[str],
        encode: Callable[[list[str]], dict[str, torch.Tensor]],
        batch_size: int,
        progress: Progress | None = None,
    ) -> CacheStats:
        """Encode each distinct missing caption once; encoder errors propagate."""
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        unique = list(dict.fromkeys(captions))
        missing = [c for c in unique if self.key(c) not in self._loaded and not self.path(self.key(c)).exists()]
        done = 0
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            with torch.no_grad():
                out = encode(list(chunk))
            for name, value in out.items():
                if value.shape[0] != len(chunk):
                    raise ValueError(f"encode returned {name} with batch {value.shape[0]} for {len(chunk)} captions")
            for j, caption in enumerate(chunk):
                entry = {name: value[j] for name, value in out.items()}
                k = self.key(caption)
                _write_atomic(self.path(k), entry)
                if self.memory:
                    self._loaded[k] = {n: t.detach().to("cpu").clone() for n, t in entry.items()}
            done += len(chunk)
            if progress is not None:
                progress(done, len(missing))
        return CacheStats(encoded=len(missing), reused=len(captions) - len(missing), total=len(captions))

    def keep_in_memory(self, keep: bool) -> None:
        """Large text features (real T5: ~5 MB per caption) are better read from disk per batch."""
        self.memory = keep
        if not keep:
            self._loaded.clear()

    def load(self, caption: str) -> dict[str, torch.Tensor]:
        """The embeddings of one caption (no batch dimension)."""
        k = self.key(caption)
        cached = self._loaded.get(k)
        if cached is not None:
            return cached
        path = self.path(k)
        if not path.exists():
            raise KeyError(f"caption {caption[:60]!r} is not in the text-embed cache; call ensure() first")
        entry = _read(path)
        if self.memory:
            self._loaded[k] = entry
        return entry
