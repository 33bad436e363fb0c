#!/usr/bin/env python
"""Latent-cache fill rate at vae_batch_size 1 vs 8, interleaved in one process, on the CPU.

The VAE is a random-init diffusers ``AutoencoderKL`` with the real models' layout (8x downsampling, 4 latent
channels) at a small width (32/64/64/64 channels, one resnet per block, mid-block attention), large enough that
convolutions dominate. 48 demo images at 192 px go through ``LatentCache.ensure`` (image decode, resize/crop,
encode, atomic write), into a fresh cache directory each round, the same path the trainer's cache stage takes.
After an untimed warm-up of each size, rounds alternate (1, 8, 1, 8, ...) so drift in the machine's speed hits both sides alike. It also reports how far
the latents of the two batch sizes are apart.

Usage::

    python bench/vae_cache.py              # 3 rounds, about a minute on two cores
    python bench/vae_cache.py --rounds 1 --images 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderKL

    from simpletuner_core.data.cache import LatentCache
    from simpletuner_core.data.config import parse_dataloader
    from simpletuner_core.data.preflight import build_plan
    from simpletuner_core.demo_data import write_demo_dataset
    from simpletuner_core.training.loading import vae_latents

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 64, 64, 64),
                        layers_per_block=1, latent_channels=4, norm_num_groups=16, sample_size=args.size).eval()
    params = sum(p.numel() for p in vae.encoder.parameters()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_demo_dataset(root / "images", count=args.images, size=args.size)
        datasets = parse_dataloader([
            {"id": "bench", "type": "local", "instance_data_dir": str(root / "images"), "resolution": args.size,
             "resolution_type": "pixel_area", "crop": True, "crop_style": "center", "crop_aspect": "square"},
            {"id": "text", "type": "local", "dataset_type": "text_embeds", "default": True}])
        plan = build_plan(datasets, base_dir=root, train_batch_size=1, size_multiple=16)
        samples = plan.samples

        def read(sample: object) -> bytes:
            return Path(sample.path).read_bytes()  # type: ignore[attr-defined]

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return vae_latents(vae, pixels, torch.device("cpu"))

        for batch in (1, 8):  # warm-up: first-call allocations and kernel selection, not timed
            LatentCache(root / f"warm-{batch}", "bench").ensure(samples[:8], read, encode, batch_size=batch)
        rates: dict[int, list[float]] = {1: [], 8: []}
        latents: dict[int, torch.Tensor] = {}
        for r in range(args.rounds):
            for batch in (1, 8):
                cache = LatentCache(root / f"cache-{batch}-{r}", "bench")
                began = time.perf_counter()
                stats = cache.ensure(samples, read, encode, batch_size=batch)
                rates[batch].append(stats.encoded / (time.perf_counter() - began))
                latents[batch] = torch.stack([cache.load(s) for s in samples])
        diff = (latents[1] - latents[8]).abs().max().item()
        print(f"VAE encoder {params:.2f} M params, {len(samples)} images at {args.size} px, "
              f"{torch.get_num_threads()} torch threads, {args.rounds} interleaved rounds")
        print(f"{'vae_batch_size':>15} {'images/s (median)':>18} {'rounds':>30}")
        for batch, values in rates.items():
            shown = ", ".join(f"{v:.1f}" for v in values)
            print(f"{batch:>15} {statistics.median(values):>18.1f} {shown:>30}")
        print(f"speed-up 8 vs 1: {statistics.median(rates[8]) / statistics.median(rates[1]):.2f}x; "
              f"latents max |diff| between batch 1 and 8: {diff:.3g} "
              f"({'bit-equal' if diff == 0 else 'not bit-equal'})")


if __name__ == "__main__":
    main()
