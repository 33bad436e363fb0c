"""TREAD token routing for Flux training: a random share of the image tokens skips a span of transformer blocks.

``tread_config`` is ``{"routes": [{"selection_ratio": r, "start_layer_idx": s, "end_layer_idx": e}, ...]}`` (a
JSON object or its text). Block indices run over the dual-stream blocks then the single-stream blocks; negative
ones count from the end (-1 is the last block); ``end_layer_idx`` is inclusive. For each route, before block
``s`` a fraction ``r`` of each sample's image tokens is dropped at random (text tokens always stay), blocks
``s..e`` run on the kept tokens with their rotary positions, and after block ``e`` the processed tokens are
scattered back: dropped tokens re-enter with the values they had before the route. Fewer tokens through the
routed blocks makes attention and the MLPs cheaper, while the loss still covers every token.

Kontext reference tokens are never dropped (only the target image's tokens are routed): they are the context
the edit is read from, and the loss never sees them directly.

The transformer's ``forward`` is wrapped on the instance (:func:`install`), so a DDP wrapper still calls it; a
call routes only when the trainer passes ``tread=`` (training steps). Validation and inference go through
diffusers' own forward unchanged.
"""

from __future__ import annotations

import itertools
import json
import types
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    selection_ratio: float
    start_layer_idx: int
    end_layer_idx: int


def parse_routes(value: Any) -> list[Route]:
    """``tread_config`` (object or JSON text) → routes; ``ValueError`` with a user-facing message."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict) or not isinstance(value.get("routes"), list) or not value["routes"]:
        raise ValueError('expected {"routes": [{"selection_ratio": 0.5, "start_layer_idx": 2, '
                         '"end_layer_idx": -2}, ...]} with at least one route')
    unknown = sorted(set(value) - {"routes"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (only \"routes\")")
    routes = []
    for i, raw in enumerate(value["routes"]):
        where = f"routes[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be an object")
        extra = sorted(set(raw) - {"selection_ratio", "start_layer_idx", "end_layer_idx"})
        if extra:
            raise ValueError(f"{where} has unknown key {extra[0]!r}")
        ratio = raw.get("selection_ratio")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
            raise ValueError(f"{where}.selection_ratio must be a number in (0, 1), the share of image tokens "
                             f"that skip the route; got {ratio!r}")
        ends = []
        for key in ("start_layer_idx", "end_layer_idx"):
            idx = raw.get(key)
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise ValueError(f"{where}.{key} must be an integer block index (negative counts from the end); "
                                 f"got {idx!r}")
            ends.append(idx)
        start, end = ends
        if (start >= 0) == (end >= 0) and start > end:
            raise ValueError(f"{where}: start_layer_idx {start} is after end_layer_idx {end}")
        routes.append(Route(float(ratio), start, end))
    return routes


def check_config(cfg: Any) -> str | None:
    """The config rule for ``tread_config`` (block counts are checked again against the loaded model)."""
    if cfg.tread_config is None:
        return None
    try:
        parse_routes(cfg.tread_config)
    except ValueError as exc:
        return str(exc)
    return None


def resolve(routes: list[Route], n_blocks: int) -> list[tuple[float, int, int]]:
    """Absolute, ordered, non-overlapping ``(ratio, start, end)`` spans for a model with ``n_blocks`` blocks."""
    spans = []
    for i, route in enumerate(routes):
        start = route.start_layer_idx + n_blocks if route.start_layer_idx < 0 else route.start_layer_idx
        end = route.end_layer_idx + n_blocks if route.end_layer_idx < 0 else route.end_layer_idx
        if not 0 <= start <= end < n_blocks:
            raise ValueError(f"routes[{i}] covers blocks {route.start_layer_idx}..{route.end_layer_idx}, which is "
                             f"not a span of this model's {n_blocks} transformer blocks")
        spans.append((route.selection_ratio, start, end))
    spans.sort(key=lambda s: s[1])
    for (_, _, prev_end), (_, start, _) in itertools.pairwise(spans):
        if start <= prev_end:
            raise ValueError(f"routes overlap at block {start}; give each block to at most one route")
    return spans


@dataclass
class Plan:
    """One training call's routing: a seed for the token choice and how many leading image tokens may drop."""

    seed: int
    routable: int


class _PerSampleRope:
    """A ``(B, S, D)`` cos or sin table that diffusers' ``apply_rotary_emb`` can broadcast.

    Flux's processor indexes the shared ``(S, D)`` table as ``[None, :, None, :]`` (sequence on dim 1); routed
    tokens differ per sample, so this answers that index with ``[:, :, None, :]``.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: Any) -> Any:
        if key != (None, slice(None), None, slice(None)):
            raise TypeError(f"per-sample rotary table indexed with {key!r}; diffusers' Flux processor changed")
        return self.table[:, :, None, :]


def install(model: Any, spans: list[tuple[float, int, int]]) -> None:
    """Wrap ``model.forward``: with ``tread=Plan(...)`` it routes, without it diffusers' forward runs as is."""
    original = model.forward

    def forward(self: Any, *args: Any, tread: Plan | None = None, **kwargs: Any) -> Any:
        if tread is None:
            return original(*args, **kwargs)
        return routed_forward(self, spans, tread, *args, **kwargs)

    model.forward = types.MethodType(forward, model)
    model.tread_spans = spans


def routed_forward(model: Any, spans: list[tuple[float, int, int]], plan: Plan, hidden_states: Any,
                   encoder_hidden_states: Any, pooled_projections: Any, timestep: Any, img_ids: Any, txt_ids: Any,
                   guidance: Any = None, return_dict: bool = True, **unused: Any) -> Any:
    """diffusers' Flux forward (embed, dual-stream blocks, single-stream blocks, output) with token routing."""
    import torch
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    given = sorted(k for k, v in unused.items() if v is not None and v is not False)
    if given:  # controlnet residuals, attention kwargs: not part of a training step here
        raise ValueError(f"TREAD routing does not support {', '.join(given)}")
    hidden = model.x_embedder(hidden_states)
    t = timestep.to(hidden.dtype) * 1000
    if guidance is None:
        temb = model.time_text_embed(t, pooled_projections)
    else:
        temb = model.time_text_embed(t, guidance.to(hidden.dtype) * 1000, pooled_projections)
    text = model.context_embedder(encoder_hidden_states)
    cos, sin = model.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
    n_text, (batch, n_image, width) = text.shape[1], hidden.shape
    full_rope = (cos, sin)
    rope: Any = full_rope
    starts = {start: (ratio, end) for ratio, start, end in spans}
    ends = {end for _, _, end in spans}
    generator = torch.Generator(device=hidden.device).manual_seed(plan.seed)
    saved = keep = None
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    checkpointing = torch.is_grad_enabled() and model.gradient_checkpointing
    for index, block in enumerate(blocks):
        if index in starts:
            ratio = starts[index][0]
            kept = max(1, round(plan.routable * (1 - ratio)))
            scores = torch.rand(batch, plan.routable, generator=generator, device=hidden.device)
            keep = scores.argsort(dim=1)[:, :kept].sort(dim=1).values
            rest = torch.arange(plan.routable, n_image, device=hidden.device).expand(batch, -1)
            keep = torch.cat([keep, rest], dim=1)  # Kontext reference tokens always stay
            saved = hidden
            hidden = hidden.gather(1, keep[..., None].expand(-1, -1, width))
            rope = tuple(_PerSampleRope(torch.cat([table[:n_text].expand(batch, -1, -1), table[n_text:][keep]],
                                                  dim=1)) for table in full_rope)
        if checkpointing:
            text, hidden = model._gradient_checkpointing_func(block, hidden, text, temb, rope, None)
        else:
            text, hidden = block(hidden_states=hidden, encoder_hidden_states=text, temb=temb,
                                 image_rotary_emb=rope)
        if index in ends and saved is not None and keep is not None:
            hidden = saved.scatter(1, keep[..., None].expand(-1, -1, width), hidden)
            saved = keep = None
            rope = full_rope
    output = model.proj_out(model.norm_out(hidden, temb))
    return (output,) if not return_dict else Transformer2DModelOutput(sample=output)
