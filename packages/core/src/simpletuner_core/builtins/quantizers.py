"""Built-in quantizers for the frozen base under an adapter: optimum-quanto int8, fp8 and int4 weights.

Quanto saves memory, not time, on CPU (it dequantizes on each forward). The base must be frozen with
``requires_grad_(False)`` after ``freeze``, or backward fails inside quanto's weight-gradient path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import QuantizerSpec

_WEIGHTS = {"int8-quanto": "qint8", "fp8-quanto": "qfloat8", "int4-quanto": "qint4"}


def _quanto(kind: str) -> Callable[..., Any]:
    def quantize(module: Any, config: Any, exclude: list[str] | None = None) -> None:
        import optimum.quanto as q

        target = module
        device = next(module.parameters()).device
        if config.quantize_via == "cpu" and device.type != "cpu":
            target = module.to("cpu")
        q.quantize(target, weights=getattr(q, _WEIGHTS[kind]), exclude=exclude or None)
        q.freeze(target)
        target.requires_grad_(False)
        if target is not module or device.type != next(target.parameters()).device.type:
            target.to(device)

    return quantize


@hookimpl
def register_quantizers(register: Callable[[QuantizerSpec], None]) -> None:
    register(QuantizerSpec("int8-quanto", _quanto("int8-quanto"), "optimum-quanto int8 weights (LoRA/LyCORIS base)."))
    register(QuantizerSpec("fp8-quanto", _quanto("fp8-quanto"), "optimum-quanto float8 weights."))
    register(QuantizerSpec("int4-quanto", _quanto("int4-quanto"),
                           "optimum-quanto int4 weights (compiles a C++ extension on first use)."))
