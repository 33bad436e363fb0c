"""Built-in quantizers for the frozen base under an adapter: optimum-quanto int8, fp8 and int4 weights.

Quanto saves memory, not time, on CPU (it dequantizes on each forward). The base must be frozen with
``requires_grad_(False)`` after ``freeze``, or backward fails inside quanto's weight-gradient path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import QuantizerSpec

if TYPE_CHECKING:
    import torch

_WEIGHTS = {"int8-quanto": "qint8", "fp8-quanto": "qfloat8", "int4-quanto": "qint4"}


def quantize_target_device(quantize_via: str, param_device: torch.device) -> torch.device:
    """Where quantization runs for weights on ``param_device``: ``cpu`` moves them off the accelerator first
    (lower peak accelerator memory, slower); ``accelerator`` quantizes them where they are."""
    import torch

    return torch.device("cpu") if quantize_via == "cpu" else param_device


def _quanto(kind: str) -> Callable[..., Any]:
    def quantize(module: Any, config: Any, exclude: list[str] | None = None) -> None:
        import optimum.quanto as q

        device = next(module.parameters()).device
        where = quantize_target_device(config.quantize_via, device)
        if where != device:
            module.to(where)
        q.quantize(module, weights=getattr(q, _WEIGHTS[kind]), exclude=exclude or None)
        q.freeze(module)
        module.requires_grad_(False)
        if next(module.parameters()).device != device:
            module.to(device)

    return quantize


@hookimpl
def register_quantizers(register: Callable[[QuantizerSpec], None]) -> None:
    register(QuantizerSpec("int8-quanto", _quanto("int8-quanto"), "optimum-quanto int8 weights (LoRA/LyCORIS base)."))
    register(QuantizerSpec("fp8-quanto", _quanto("fp8-quanto"), "optimum-quanto float8 weights."))
    register(QuantizerSpec("int4-quanto", _quanto("int4-quanto"),
                           "optimum-quanto int4 weights (compiles a C++ extension on first use)."))
