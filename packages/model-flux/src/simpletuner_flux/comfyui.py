"""Flux LoRA keys in ComfyUI's (kohya) layout: ``lora_unet_<BFL module>.lora_down/lora_up/alpha``.

ComfyUI, kohya and Forge name Flux modules as Black Forest Labs' checkpoint does. There, a double block's q/k/v are
one fused ``qkv`` Linear and a single block's q/k/v and MLP input are one ``linear1``. A LoRA on the separate
diffusers projections becomes one LoRA on the fused module: ``lora_down`` stacks the downs, ``lora_up`` is
block-diagonal with one fixed rank-wide slot per part (zeros where a projection has no LoRA, so a part whose
``lora_up`` is still all zeros keeps its place), and ``alpha`` is scaled with the stacked rank so ``alpha / rank``
is unchanged. Loading reverses this exactly.
"""

from __future__ import annotations

import re

import torch

from simpletuner_core.records import LoraKeyMap

_DOUBLE = {
    "attn.to_out.0": "img_attn_proj", "attn.to_add_out": "txt_attn_proj",
    "ff.net.0.proj": "img_mlp_0", "ff.net.2": "img_mlp_2", "ff_context.net.0.proj": "txt_mlp_0",
    "ff_context.net.2": "txt_mlp_2", "norm1.linear": "img_mod_lin", "norm1_context.linear": "txt_mod_lin",
}
_DOUBLE_FUSED = {"attn.to_q": ("img_attn_qkv", 0), "attn.to_k": ("img_attn_qkv", 1),
                 "attn.to_v": ("img_attn_qkv", 2), "attn.add_q_proj": ("txt_attn_qkv", 0),
                 "attn.add_k_proj": ("txt_attn_qkv", 1), "attn.add_v_proj": ("txt_attn_qkv", 2)}
_SINGLE = {"proj_out": "linear2", "norm.linear": "modulation_lin"}
_SINGLE_FUSED = {"attn.to_q": ("linear1", 0), "attn.to_k": ("linear1", 1), "attn.to_v": ("linear1", 2),
                 "proj_mlp": ("linear1", 3)}
_GLOBAL = {"x_embedder": "img_in", "context_embedder": "txt_in",
           "time_text_embed.timestep_embedder.linear_1": "time_in_in_layer",
           "time_text_embed.timestep_embedder.linear_2": "time_in_out_layer",
           "time_text_embed.guidance_embedder.linear_1": "guidance_in_in_layer",
           "time_text_embed.guidance_embedder.linear_2": "guidance_in_out_layer",
           "time_text_embed.text_embedder.linear_1": "vector_in_in_layer",
           "time_text_embed.text_embedder.linear_2": "vector_in_out_layer"}
_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")
PREFIX = "lora_unet_"


def _split_sizes(name: str, rows_of: dict[int, int]) -> list[int]:
    """Output rows of each part of a fused module, from the rows of the parts that are present."""
    if name.endswith("qkv"):
        inner = next(iter(rows_of.values()))
        return [inner] * 3
    attn = [rows for j, rows in rows_of.items() if j < 3]
    inner = attn[0] if attn else rows_of[3] // 4  # Flux's single-block MLP is 4× the attention width
    return [inner, inner, inner, 4 * inner]


def _target(module: str) -> tuple[str, int | None]:
    """diffusers module path → (BFL name with underscores, part index in a fused module or None)."""
    if module in _GLOBAL:
        return _GLOBAL[module], None
    match = _BLOCK.match(module)
    if match:
        kind, index, rest = match.groups()
        plain, fused = (_DOUBLE, _DOUBLE_FUSED) if kind == "transformer_blocks" else (_SINGLE, _SINGLE_FUSED)
        head = f"{'double' if kind == 'transformer_blocks' else 'single'}_blocks_{index}_"
        if rest in plain:
            return head + plain[rest], None
        if rest in fused:
            return head + fused[rest][0], fused[rest][1]
    raise ValueError(f"Flux module {module!r} has no ComfyUI name; remove it from lora_target_modules or use "
                     "lora_format diffusers")


def export(state: dict[str, torch.Tensor], alpha: float | None) -> dict[str, torch.Tensor]:
    """peft keys (``transformer.<module>.lora_A.weight``) → ComfyUI keys."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        module, _, rest = key.removeprefix("transformer.").rpartition(".lora_")
        pairs.setdefault(module, {})[rest.split(".")[0]] = value
    fused: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    out: dict[str, torch.Tensor] = {}
    for module, ab in sorted(pairs.items()):
        down, up = ab["A"], ab["B"]
        name, part = _target(module)
        if part is None:
            out[f"{PREFIX}{name}.lora_down.weight"] = down
            out[f"{PREFIX}{name}.lora_up.weight"] = up
            out[f"{PREFIX}{name}.alpha"] = torch.tensor(float(alpha if alpha is not None else down.shape[0]))
        else:
            fused.setdefault(name, {})[part] = (down, up)
    for name, parts in sorted(fused.items()):
        order = sorted(parts)
        sizes = _split_sizes(name, {j: parts[j][1].shape[0] for j in order})
        slots = len(sizes)  # one fixed rank-wide slot per part, zeros for a part without a LoRA
        first_down = parts[order[0]][0]
        rank = first_down.shape[0]
        down = torch.zeros(rank * slots, first_down.shape[1], dtype=first_down.dtype)
        up = torch.zeros(sum(sizes), rank * slots, dtype=first_down.dtype)
        for j in order:
            start = sum(sizes[:j])
            down[j * rank:(j + 1) * rank] = parts[j][0]
            up[start:start + sizes[j], j * rank:(j + 1) * rank] = parts[j][1]
        out[f"{PREFIX}{name}.lora_down.weight"] = down
        out[f"{PREFIX}{name}.lora_up.weight"] = up
        out[f"{PREFIX}{name}.alpha"] = torch.tensor(float((alpha if alpha is not None else rank) * slots))
    return out


def _diffusers_names() -> dict[tuple[str, int | None], str]:
    """(BFL suffix, part) → diffusers module suffix, for the reverse direction."""
    names: dict[tuple[str, int | None], str] = {}
    for table, kind in ((_DOUBLE, "double"), (_SINGLE, "single")):
        for diffusers_name, bfl in table.items():
            names[(f"{kind}:{bfl}", None)] = diffusers_name
    for table, kind in ((_DOUBLE_FUSED, "double"), (_SINGLE_FUSED, "single")):
        for diffusers_name, (bfl, part) in table.items():
            names[(f"{kind}:{bfl}", part)] = diffusers_name
    return names


_REVERSE = _diffusers_names()
_GLOBAL_REVERSE = {v: k for k, v in _GLOBAL.items()}
_BFL_BLOCK = re.compile(r"^(double|single)_blocks_(\d+)_(.+)$")


def _module(name: str, part: int | None) -> str:
    if name in _GLOBAL_REVERSE:
        return _GLOBAL_REVERSE[name]
    match = _BFL_BLOCK.match(name)
    key = (f"{match.group(1)}:{match.group(3)}", part) if match else None
    if key not in _REVERSE:
        raise ValueError(f"ComfyUI key {PREFIX}{name} has no Flux (diffusers) module")
    block = "transformer_blocks" if match.group(1) == "double" else "single_transformer_blocks"
    return f"{block}.{match.group(2)}.{_REVERSE[key]}"


def load(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float | None]:
    """ComfyUI keys → peft keys with each module's ``alpha / rank`` folded into ``lora_B`` (returned alpha =
    rank, i.e. scale 1). A fused part whose slot is all zeros (no LoRA on it) is left out."""
    out: dict[str, torch.Tensor] = {}
    names = sorted({k[len(PREFIX):].split(".")[0] for k in state if k.startswith(PREFIX)})
    ranks: set[int] = set()
    for name in names:
        missing = [part for part in ("lora_down", "lora_up") if f"{PREFIX}{name}.{part}.weight" not in state]
        if missing:
            raise ValueError(f"ComfyUI module {PREFIX}{name} has no {' or '.join(missing)} weight")
        down = state[f"{PREFIX}{name}.lora_down.weight"].float()
        up = state[f"{PREFIX}{name}.lora_up.weight"].float()
        alpha = state.get(f"{PREFIX}{name}.alpha")
        scale = (float(alpha) if alpha is not None else down.shape[0]) / down.shape[0]
        if not name.endswith(("qkv", "linear1")):
            out[f"transformer.{_module(name, None)}.lora_A.weight"] = down
            out[f"transformer.{_module(name, None)}.lora_B.weight"] = up * scale
            ranks.add(down.shape[0])
            continue
        rows = up.shape[0]
        sizes = [rows // 3] * 3 if name.endswith("qkv") else [rows // 7] * 3 + [4 * (rows // 7)]
        starts = [sum(sizes[:j]) for j in range(len(sizes))]
        slotted = _fixed_slots(down, up, sizes, starts)
        if slotted is not None:  # our layout (and kohya's for a full qkv): part j owns rank-wide slot j
            for j, (a, b) in enumerate(slotted):
                if a.any() or b.any():  # a part with a LoRA, even one whose lora_up is still all zeros
                    out[f"transformer.{_module(name, j)}.lora_A.weight"] = a.contiguous()
                    out[f"transformer.{_module(name, j)}.lora_B.weight"] = (b * scale).contiguous()
                    ranks.add(a.shape[0])
            continue
        present = [j for j in range(len(sizes)) if up[starts[j]:starts[j] + sizes[j]].abs().sum() > 0]
        if not present:
            continue
        rank = down.shape[0] // len(present) if down.shape[0] % len(present) == 0 else None
        for p, j in enumerate(present):
            block = up[starts[j]:starts[j] + sizes[j]]
            cols = slice(p * rank, (p + 1) * rank) if rank else slice(None)
            diagonal = rank is not None and torch.count_nonzero(block).item() == torch.count_nonzero(
                block[:, cols]).item()
            a, b = (down[cols], block[:, cols]) if diagonal else (down, block)
            out[f"transformer.{_module(name, j)}.lora_A.weight"] = a.contiguous()
            out[f"transformer.{_module(name, j)}.lora_B.weight"] = (b * scale).contiguous()
            ranks.add(a.shape[0])
    return out, (float(ranks.pop()) if len(ranks) == 1 else None)


def _fixed_slots(down: torch.Tensor, up: torch.Tensor, sizes: list[int], starts: list[int]
                 ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """``(down, up)`` per part when ``up`` is block-diagonal over equal rank-wide column slots, one per part;
    None for any other layout (older files with only the present parts stacked, other tools' merges)."""
    slots = len(sizes)
    if down.shape[0] % slots or up.shape[1] != down.shape[0]:
        return None
    rank = down.shape[0] // slots
    for j in range(slots):
        rows = up[starts[j]:starts[j] + sizes[j]]
        outside = torch.cat([rows[:, :j * rank], rows[:, (j + 1) * rank:]], dim=1)
        if outside.any():
            return None
    return [(down[j * rank:(j + 1) * rank], up[starts[j]:starts[j] + sizes[j], j * rank:(j + 1) * rank])
            for j in range(slots)]


def comfyui_key_map() -> LoraKeyMap:
    return LoraKeyMap("comfyui", export, load)
