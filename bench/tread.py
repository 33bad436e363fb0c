#!/usr/bin/env python
"""Seconds per training step with and without TREAD routing, interleaved in one process.

Two copies of one random-init Flux transformer (same weights) train side by side: ``plain`` through diffusers'
forward, ``tread`` through :func:`simpletuner_flux.tread.install` with a route that drops half of the image tokens
from the middle blocks. Each step is a full fine-tune step (forward, flow-matching MSE, backward, AdamW) on fresh
random packed latents. Rounds alternate (plain, tread, plain, tread, ...) so drift in the machine's speed hits both
sides alike; s/step is the median over the timed steps of each side.

Usage::

    python bench/tread.py                 # default: hidden 256, 2 + 4 blocks, 64x64 latents (1024 image tokens)
    python bench/tread.py --rounds 2 --steps 2   # smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from typing import Any


def build(args: argparse.Namespace) -> Any:
    """The benchmark's transformer (rope axes sum to the head width)."""
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=args.dual, num_single_layers=args.single,
        attention_head_dim=args.hidden // args.heads, num_attention_heads=args.heads, joint_attention_dim=64,
        pooled_projection_dim=64, guidance_embeds=True, axes_dims_rope=_rope_axes(args.hidden // args.heads))


def _rope_axes(head: int) -> tuple[int, int, int]:
    """Flux splits each head's rotary dims over (context index, row, column); even parts summing to ``head``."""
    side = (head * 3 // 8) // 2 * 2
    return head - 2 * side, side, side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dual", type=int, default=2)
    parser.add_argument("--single", type=int, default=4)
    parser.add_argument("--latent", type=int, default=64, help="latent edge; tokens = (latent/2)^2")
    parser.add_argument("--text", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--start", type=int, default=1)
    parser.add_argument("--end", type=int, default=-2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from simpletuner_flux import tread
    from simpletuner_flux.packing import latent_ids

    plain = build(args)
    routed = copy.deepcopy(plain)
    spans = tread.resolve(tread.parse_routes({"routes": [{"selection_ratio": args.ratio, "start_layer_idx":
                                                          args.start, "end_layer_idx": args.end}]}),
                          args.dual + args.single)
    tread.install(routed, spans)
    side = {"plain": plain, "tread": routed}
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in side.items()}
    rows = cols = args.latent // 2
    tokens = rows * cols
    ids, txt_ids = latent_ids(rows, cols), torch.zeros(args.text, 3)
    gen = torch.Generator().manual_seed(1)

    def step(name: str, seed: int) -> float:
        model, opt = side[name], opts[name]
        x = torch.randn(args.batch, tokens, 64, generator=gen)
        target = torch.randn(args.batch, tokens, 64, generator=gen)
        kwargs = {"tread": tread.Plan(seed=seed, routable=tokens)} if name == "tread" else {}
        start = time.perf_counter()
        pred = model(hidden_states=x, timestep=torch.rand(args.batch, generator=gen),
                     guidance=torch.ones(args.batch), pooled_projections=torch.randn(args.batch, 64, generator=gen),
                     encoder_hidden_states=torch.randn(args.batch, args.text, 64, generator=gen), txt_ids=txt_ids,
                     img_ids=ids, return_dict=False, **kwargs)[0]
        F.mse_loss(pred, target).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for name in side:
        for i in range(args.warmup):
            step(name, i)
    times: dict[str, list[float]] = {name: [] for name in side}
    wall = time.perf_counter()
    for r in range(args.rounds):
        for name in side:
            times[name].extend(step(name, 1000 * r + i) for i in range(args.steps))
    wall = time.perf_counter() - wall
    med = {name: statistics.median(v) for name, v in times.items()}
    params = sum(p.numel() for p in plain.parameters()) / 1e6
    print(f"Flux transformer: hidden {args.hidden} ({args.heads} heads), {args.dual} dual + {args.single} single "
          f"blocks, {params:.2f} M params; {tokens} image + {args.text} text tokens, batch {args.batch}")
    print(f"TREAD route: blocks {spans[0][1]}..{spans[0][2]} keep {1 - args.ratio:.0%} of the image tokens")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{args.rounds} rounds x {args.steps} steps per side, interleaved; timed wall {wall:.1f} s")
    print("| side | s/step (median) | min | max |")
    print("|------|-----------------|-----|-----|")
    for name, v in times.items():
        print(f"| {name} | {med[name]:.3f} | {min(v):.3f} | {max(v):.3f} |")
    print(f"tread / plain time: {med['tread'] / med['plain']:.3f}  (speed-up {med['plain'] / med['tread']:.2f}x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "times": times, "median": med}, fh, indent=1)


if __name__ == "__main__":
    main()
