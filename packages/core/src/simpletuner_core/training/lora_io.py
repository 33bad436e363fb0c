"""Adapter files: write them in the chosen ``lora_format``, read any registered format back (auto-detected).

Every family saves through :func:`save_adapter`, so files carry the same metadata (``format``, ``model_family``,
``adapter`` hyper-parameters) and ``init_lora`` / ``simpletuner lora inspect`` work for all of them. diffusers-format
files also carry diffusers' own ``lora_adapter_metadata``, so ``load_lora_weights`` uses our alpha, not its
rank-equals-alpha default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LORA_FILE = "pytorch_lora_weights.safetensors"
LYCORIS_FILE = "pytorch_lycoris_weights.safetensors"


class LoraFileError(ValueError):
    """An adapter file cannot be read or does not fit; the message says which and why."""


def save_adapter(adapter: Any, family: Any, lora_format: Any, output_dir: Path) -> Path:
    """Write the adapter's weights under ``output_dir``; returns the file."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}
    hyper = adapter.hyperparameters
    meta = {"model_family": family.name, "adapter": json.dumps(hyper, default=str)}
    if adapter.kind == "standard":
        state = lora_format.convert(state, family, hyper.get("alpha"))
        meta["format"] = lora_format.name
        if lora_format.name == "diffusers":
            meta["lora_adapter_metadata"] = json.dumps({
                "transformer.r": hyper["rank"], "transformer.lora_alpha": hyper["alpha"],
                "transformer.target_modules": list(hyper["target_modules"]),
            }, sort_keys=True)
        path = output_dir / LORA_FILE
    else:  # LyCORIS' own keys (``lycoris_<module>``), which ComfyUI also reads
        meta["format"] = "lycoris"
        path = output_dir / LYCORIS_FILE
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, str(path), metadata=meta)
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not path.is_file():
        raise LoraFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = dict(fh.metadata() or {})
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoraFileError(f"{path}: not a readable safetensors file ({exc})") from None


def detect_format(keys: list[str], meta: dict[str, str], registry: Any) -> str:
    """The registered format whose ``detect`` recognises the keys (LyCORIS files are named ``lycoris``)."""
    if any(k.startswith("lycoris_") for k in keys):
        return "lycoris"
    for spec in registry.lora_formats.values():
        if spec.detect(keys):
            return spec.name
    known = ", ".join(registry.lora_formats.names())
    sample = ", ".join(sorted(keys)[:3])
    raise LoraFileError(f"keys match no known LoRA format (known: {known}, lycoris); first keys: {sample}")


#: The safetensors metadata key diffusers' ``save_lora_weights`` writes (peft's LoraConfig fields, each under a
#: ``transformer.`` / ``text_encoder.`` prefix, as one JSON object).
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"


def _alpha_from_metadata(path: Path, meta: dict[str, str]) -> float | None:
    """The LoRA alpha a file declares: our own ``adapter`` metadata, else diffusers' ``lora_adapter_metadata``."""
    try:
        if meta.get("adapter"):
            alpha = json.loads(meta["adapter"]).get("alpha")
            if alpha is not None:
                return float(alpha)
        theirs = json.loads(meta[DIFFUSERS_METADATA_KEY]) if meta.get(DIFFUSERS_METADATA_KEY) else {}
    except (ValueError, TypeError, AttributeError) as exc:
        raise LoraFileError(f"{path}: unreadable adapter metadata ({exc})") from None
    if not isinstance(theirs, dict):
        return None
    if theirs.get("transformer.alpha_pattern") or theirs.get("transformer.rank_pattern"):
        raise LoraFileError(f"{path} sets a per-module alpha or rank (alpha_pattern/rank_pattern), which init_lora "
                            "cannot rescale to one lora_alpha")
    alpha = theirs.get("transformer.lora_alpha")
    return float(alpha) if alpha is not None else None


def read_lora(path: str | Path, family: Any, registry: Any | None = None
              ) -> tuple[str, dict[str, Any], float | None, dict[str, str]]:
    """``(format, state in the adapter's own layout, alpha or None, metadata)`` for ``init_lora``.

    Standard LoRA files come back as peft keys without the ``transformer.`` prefix; LyCORIS files unchanged.
    """
    if registry is None:
        from simpletuner_core.plugins import get_registry

        registry = get_registry()
    path = Path(path).expanduser()
    state, meta = _read(path)
    fmt = detect_format(list(state), meta, registry)
    saved_family = meta.get("model_family")
    if saved_family and registry.families.canonical(saved_family) not in (None, family.name):
        raise LoraFileError(f"{path} was trained for model family {saved_family!r}, not {family.name!r}")
    if fmt == "lycoris":
        return fmt, state, None, meta
    spec = registry.lora_formats.get(fmt)
    if spec.load is None:
        raise LoraFileError(f"{path}: format {fmt!r} can be written but not read back")
    try:
        peft_state, alpha = spec.load(state, family)
    except ValueError as exc:
        raise LoraFileError(f"{path}: {exc}") from None
    if alpha is None:
        alpha = _alpha_from_metadata(path, meta)
    if alpha is None:  # what diffusers' loader assumes for a file without an alpha: alpha = rank (scale 1)
        ranks = {int(v.shape[0]) for k, v in peft_state.items() if ".lora_A." in k}
        alpha = float(ranks.pop()) if len(ranks) == 1 else None
    return fmt, {k.removeprefix("transformer."): v for k, v in peft_state.items()}, alpha, meta


def load_init_lora(adapter: Any, path: str, family: Any, registry: Any | None = None) -> str:
    """Put ``init_lora`` weights into a freshly applied adapter; returns the detected format.

    A LoRA saved with another alpha is rescaled so the loaded adapter computes the same update.
    """
    fmt, state, alpha, _ = read_lora(path, family, registry)
    if not state:
        raise LoraFileError(f"{path}: no adapter weights could be read from it ({fmt} format)")
    if (fmt == "lycoris") != (adapter.kind == "lycoris"):
        raise LoraFileError(f"{path} holds {fmt} weights but lora_type is {adapter.kind!r}")
    if adapter.kind == "standard":
        ours = float(adapter.hyperparameters["alpha"])
        if alpha is not None and float(alpha) != ours:
            factor = float(alpha) / ours
            state = {k: v * factor if ".lora_B." in k else v for k, v in state.items()}
        ranks = {int(v.shape[0]) for k, v in state.items() if ".lora_A." in k}
        if ranks and ranks != {int(adapter.hyperparameters["rank"])}:
            raise LoraFileError(f"{path} has LoRA rank {sorted(ranks)}, but lora_rank is "
                                f"{adapter.hyperparameters['rank']}; set --lora_rank to match")
    try:
        adapter.load(state)
    except (ValueError, RuntimeError) as exc:
        raise LoraFileError(f"init_lora {path}: {exc}") from None
    return fmt


def inspect_lora(path: str | Path, registry: Any | None = None) -> dict[str, Any]:
    """Format, family, rank and key count of an adapter file (``simpletuner lora inspect``)."""
    if registry is None:
        from simpletuner_core.plugins import get_registry

        registry = get_registry()
    path = Path(path).expanduser()
    state, meta = _read(path)
    fmt = detect_format(list(state), meta, registry)
    hyper = json.loads(meta["adapter"]) if meta.get("adapter") else {}
    down = [v for k, v in state.items() if ".lora_A." in k or ".lora_down." in k]
    ranks = sorted({int(v.shape[0]) for v in down})
    modules = {k.split(".lora_")[0] for k in state if ".lora_" in k}
    if fmt == "lycoris":
        modules = {k.split(".")[0] for k in state}
    alphas = sorted({float(v) for k, v in state.items() if k.endswith(".alpha") and v.numel() == 1})
    return {
        "file": str(path), "format": fmt, "family": meta.get("model_family"),
        "adapter": hyper.get("lora_type", "lycoris" if fmt == "lycoris" else "standard"),
        "rank": hyper.get("rank", hyper.get("linear_dim")) or (ranks[0] if len(ranks) == 1 else ranks or None),
        "alpha": hyper.get("alpha", hyper.get("linear_alpha")) or (alphas[0] if len(alphas) == 1 else None),
        "keys": len(state), "modules": len(modules),
    }
