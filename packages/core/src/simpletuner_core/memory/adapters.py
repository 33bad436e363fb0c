"""Which layers a config adapts, quantizes and trains, and what each costs in parameters: torch-free mirrors of
peft's ``target_modules`` matching, LyCORIS' presets and factorisations, and quanto's ``exclude`` patterns."""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatch
from typing import Any

from simpletuner_core.memory.arch import Architecture, Linear


def peft_matches(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def quantized(arch: Architecture, lin: Linear) -> bool:
    return not any(fnmatch(lin.name, pattern) for pattern in arch.quantize_exclude)


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """LyCORIS' split of a dimension into (m, n), m <= n, m as close to ``factor`` as divides it."""
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (n, m) if m > n else (m, n)
    if factor < 0:
        factor = dimension
    m, n = 1, dimension
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > m + n or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


def _lokr(lin: Linear, s: Mapping[str, Any]) -> list[int]:
    dim, factor = int(s.get("linear_dim", 4)), int(s.get("factor", -1))
    full = bool(s.get("full_matrix", False))
    in_m, in_n = factorization(lin.in_features, factor)
    out_l, out_k = factorization(lin.out_features, factor)
    if s.get("unbalanced_factorization"):
        out_l, out_k = out_k, out_l
    tensors = []
    if s.get("decompose_both") and dim < max(out_l, in_m) / 2 and not full:
        tensors += [out_l * dim, dim * in_m]
    else:
        tensors.append(out_l * in_m)
    if dim < max(out_k, in_n) / 2 and not full:
        tensors += [out_k * dim, dim * in_n]
    else:
        tensors.append(out_k * in_n)
    return tensors


def adapter_tensors(lin: Linear, algo: str, settings: Mapping[str, Any]) -> list[int]:
    """Element counts of the trainable tensors one adapted Linear gets."""
    rank = int(settings.get("linear_dim", settings.get("rank", 4)))
    if algo == "standard":
        return [rank * lin.in_features, lin.out_features * rank]
    if algo == "lokr":
        return _lokr(lin, settings)
    if algo == "locon":
        return [rank * lin.in_features, lin.out_features * rank]
    if algo == "loha":
        return [lin.out_features * rank, rank * lin.in_features] * 2
    if algo == "full":
        return [lin.in_features * lin.out_features, *([lin.out_features] if lin.bias else [])]
    raise ValueError(f"no memory model for adapter algorithm {algo!r}")


def lycoris_selected(arch: Architecture, preset: Mapping[str, Any]) -> list[Linear]:
    """The Linear layers a LyCORIS preset wraps: every Linear inside a module of a ``target_module`` class, or
    whose full name matches a ``target_name`` pattern."""
    classes = set(preset.get("target_module") or [])
    names = list(preset.get("target_name") or [])
    out = []
    for lin in arch.linears:
        if arch.model_class in classes or lin.owner in classes or any(fnmatch(lin.name, p) for p in names):
            out.append(lin)
    return out


def adapted(arch: Architecture, description: Mapping[str, Any] | None) -> tuple[list[Linear], str, dict]:
    """(layers, algorithm, settings) of the adapter the config describes (``describe_lora``/``describe_lycoris``
    output); ``([], "", {})`` for a full fine-tune."""
    if not description:
        return [], "", {}
    if description.get("lora_type") == "lycoris":
        settings = {k: v for k, v in description.items() if k not in ("lora_type", "preset")}
        return lycoris_selected(arch, description["preset"]), str(settings.get("algo", "lokr")), settings
    targets = list(description["target_modules"])
    chosen = [lin for lin in arch.linears if peft_matches(lin.name, targets)]
    return chosen, "standard", {"linear_dim": description["rank"], "dropout": description.get("dropout", 0.0)}
