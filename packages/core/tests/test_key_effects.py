"""Config keys that act inside a builder (optimizer, LR schedule, quantizer placement): each test fails when
the key is ignored, by looking at what the key is meant to change, not only at the stored config value."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from simpletuner_core.builtins.quantizers import quantize_target_device
from simpletuner_core.config import validate
from simpletuner_core.plugins import get_registry


@pytest.fixture(autouse=True)
def fresh(isolated_plugins: Any) -> None:
    isolated_plugins(SIMPLETUNER_LOAD_PLUGINS="pixart")


def config(**extra: Any) -> Any:
    return validate({"--model_family": "pixart_sigma", "--model_flavour": "tiny", "--model_type": "full",
                     "--output_dir": "/tmp/out", "--data_backend_config": "x.json", "--max_train_steps": 30,
                     "--optimizer": "adamw", "--learning_rate": 0.1,
                     **{f"--{k}": v for k, v in extra.items()}})


def lr_curve(cfg: Any, steps: int) -> list[float]:
    """The learning rate at each optimizer step, through the registered scheduler factory the engine uses."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    scheduler = get_registry().schedulers.get(cfg.lr_scheduler).factory(optimizer, cfg, steps)
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("cycles", [1, 3])
def test_lr_num_cycles_is_the_number_of_cosine_restarts(cycles: int) -> None:
    cfg = config(lr_scheduler="cosine_with_restarts", lr_num_cycles=cycles, lr_warmup_steps=0)
    curve = lr_curve(cfg, 30)
    restarts = sum(1 for before, after in itertools.pairwise(curve) if after > before)
    assert restarts == cycles - 1, curve
    assert curve[0] == pytest.approx(0.1)


def optimizer_for(cfg: Any, param: torch.nn.Parameter) -> Any:
    return get_registry().optimizers.get(cfg.optimizer).factory([param], cfg)


@pytest.mark.parametrize("name", ["adamw", "adamw_bf16", "optimi-adamw", "optimi-lion", "prodigy"])
def test_adam_weight_decay_and_epsilon_reach_the_optimizer(name: str) -> None:
    spec = get_registry().optimizers.get(name)
    if spec.unavailable() is not None:
        pytest.skip(spec.unavailable())
    cfg = config(optimizer=name, adam_weight_decay=0.25, adam_epsilon=1e-3)
    group = optimizer_for(cfg, torch.nn.Parameter(torch.ones(2))).param_groups[0]
    assert group["weight_decay"] == 0.25
    if name != "optimi-lion":  # Lion has no epsilon
        assert group["eps"] == 1e-3


def one_adamw_step(grad: float, **keys: Any) -> float:
    """The parameter after one AdamW step from 1.0 with the given gradient (lr 0.1)."""
    param = torch.nn.Parameter(torch.ones(1))
    optimizer = optimizer_for(config(**keys), param)
    param.grad = torch.full((1,), grad)
    optimizer.step()
    return float(param.detach())


def test_adam_weight_decay_shrinks_weights_without_gradient() -> None:
    # Zero gradient: Adam's own update is 0, so only decoupled decay moves the weight, by lr * wd.
    assert one_adamw_step(0.0, adam_weight_decay=0.0) == 1.0
    assert one_adamw_step(0.0, adam_weight_decay=0.5) == pytest.approx(1.0 - 0.1 * 0.5)


def test_adam_epsilon_damps_the_first_step() -> None:
    # First step: the update is lr * g / (|g| + eps); with g = 1e-3 a large epsilon shrinks it about 1000x.
    tiny_eps = 1.0 - one_adamw_step(1e-3, adam_weight_decay=0.0, adam_epsilon=1e-8)
    large_eps = 1.0 - one_adamw_step(1e-3, adam_weight_decay=0.0, adam_epsilon=1.0)
    assert tiny_eps == pytest.approx(0.1, rel=1e-4)
    assert large_eps == pytest.approx(0.1 * 1e-3 / (1e-3 + 1.0), rel=1e-3)


def test_quantize_via_decides_where_quantization_runs() -> None:
    """The placement decision on its own: no accelerator is needed to check the accelerator branch."""
    cuda = torch.device("cuda", 0)
    assert quantize_target_device("cpu", cuda) == torch.device("cpu")
    assert quantize_target_device("accelerator", cuda) == cuda
    assert quantize_target_device("cpu", torch.device("cpu")) == torch.device("cpu")
    assert quantize_target_device("accelerator", torch.device("cpu")) == torch.device("cpu")
