"""``attention_mechanism``: which kernel a family's transformer attends with.

``diffusers`` and ``sdpa`` both mean torch's scaled-dot-product attention (diffusers' default processors call it);
``sdpa`` also pins diffusers' ``native`` dispatch backend where the processors go through the dispatcher. The other
names are SimpleTuner's; each needs its own package (and usually CUDA), so the config rules refuse them by name
when the package is not importable, and :func:`apply_attention` refuses them for processors that cannot switch
backend. Torch-free at import: the config rules use :func:`config_errors`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

from simpletuner_core.config.errors import ConfigError, ConfigInvalid

#: SimpleTuner's name → diffusers ``AttentionBackendName`` value (None: leave the processors as loaded).
BACKENDS: dict[str, str | None] = {
    "diffusers": None,
    "sdpa": "native",
    "xformers": "xformers",
    "sageattention": "sage",
    "sageattention-int8-fp16-triton": "_sage_qk_int8_pv_fp16_triton",
    "sageattention-int8-fp16-cuda": "_sage_qk_int8_pv_fp16_cuda",
    "sageattention-int8-fp8-cuda": "_sage_qk_int8_pv_fp8_cuda",
}
MECHANISMS = tuple(BACKENDS)


def _package(mechanism: str) -> str | None:
    """The import name a mechanism needs beyond torch and diffusers."""
    if mechanism == "xformers":
        return "xformers"
    if mechanism.startswith("sageattention"):
        return "sageattention"
    return None


def config_errors(cfg: Any) -> Iterable[ConfigError]:
    """A mechanism whose package is missing is refused before any model loads (unknown names: the choices)."""
    package = _package(cfg.attention_mechanism)
    if package and importlib.util.find_spec(package) is None:
        yield ConfigError("attention_mechanism", f"{cfg.attention_mechanism} needs the `{package}` package, which "
                          "is not installed here; use diffusers or sdpa (torch SDPA)")


def apply_attention(model: Any, mechanism: str, log: Any = None) -> str:
    """Set ``mechanism`` on ``model`` after loading; returns what it now uses (for the log)."""
    backend = BACKENDS.get(mechanism)
    processors = list(getattr(model, "attn_processors", {}).values())
    switchable = bool(processors) and all(hasattr(p, "_attention_backend") for p in processors)
    if backend is None:
        used = "diffusers' default processors (torch SDPA)"
    elif switchable:
        try:
            model.set_attention_backend(backend)
        except (ImportError, ValueError, RuntimeError) as exc:
            raise ConfigInvalid([ConfigError("attention_mechanism", f"{mechanism}: {exc}")]) from None
        used = f"diffusers attention backend {backend}"
    elif backend == "native":  # processors that call torch SDPA directly (e.g. AttnProcessor2_0) already are it
        used = "torch SDPA (the model's processors call it directly)"
    else:
        kinds = sorted({type(p).__name__ for p in processors})
        raise ConfigInvalid([ConfigError("attention_mechanism", f"{mechanism} is not supported here: this model's "
                                         f"attention processors ({', '.join(kinds)}) cannot switch backend; use "
                                         "diffusers or sdpa")])
    if log is not None:
        log(f"attention_mechanism={mechanism}: {used}")
    return used
