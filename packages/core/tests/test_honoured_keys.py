"""Keys that used to be accepted and then ignored: each is now honoured, or named by the validator with the reason."""

from __future__ import annotations

from typing import Any

import pytest

from simpletuner_core.config import ConfigInvalid, validate, warnings_for
from simpletuner_core.plugins import get_registry


def base(**extra: Any) -> dict[str, Any]:
    return {"--model_family": "pixart_sigma", "--model_flavour": "tiny", "--output_dir": "/tmp/out",
            "--data_backend_config": "x.json", "--max_train_steps": 10, **extra}


def errors_of(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as info:
        validate(raw)
    return {e.path: e.message for e in info.value.errors}


# -- lr_warmup_steps with the constant schedule ------------------------------------------------------------------

def _lrs(cfg: Any, steps: int = 6) -> list[float]:
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.learning_rate)
    scheduler = get_registry().schedulers.get(cfg.lr_scheduler).factory(optimizer, cfg, steps)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_with_the_constant_schedule_is_named_as_having_no_effect() -> None:
    warm = validate(base(**{"--lr_scheduler": "constant", "--lr_warmup_steps": 4, "--learning_rate": 1e-3}))
    cold = validate(base(**{"--lr_scheduler": "constant", "--learning_rate": 1e-3}))
    assert _lrs(warm) == _lrs(cold) == [1e-3] * 6  # the fact the warning reports
    notes = warnings_for(warm)
    assert any("lr_warmup_steps=4 has no effect with lr_scheduler=constant" in n and "constant_with_warmup" in n
               for n in notes), notes
    assert not any("lr_warmup_steps" in n for n in warnings_for(cold))
    with_warmup = validate(base(**{"--lr_scheduler": "constant_with_warmup", "--lr_warmup_steps": 4,
                                   "--learning_rate": 1e-3}))
    assert _lrs(with_warmup)[0] == 0.0 and not any("lr_warmup_steps" in n for n in warnings_for(with_warmup))


# -- optimizer betas ---------------------------------------------------------------------------------------------

#: adamw8bit is bitsandbytes' CUDA optimizer: its cases run with the gpu-marked tests.
BETA_OPTIMIZERS = ["adamw", "adamw_bf16", "optimi-adamw", "optimi-lion", "prodigy",
                   pytest.param("adamw8bit", marks=pytest.mark.gpu)]


def _needs(name: str) -> None:
    reason = get_registry().optimizers.get(name).unavailable()
    if reason:
        pytest.fail(f"{name} {reason}")  # on a GPU box the test install must provide it


def _betas(cfg: Any) -> tuple[float, float]:
    import torch

    optimizer = get_registry().optimizers.get(cfg.optimizer).factory([torch.nn.Parameter(torch.zeros(2))], cfg)
    group = optimizer.param_groups[0]
    return tuple(group["betas"]) if "betas" in group else (group["beta1"], group["beta2"])  # optimi: beta1/beta2


@pytest.mark.parametrize("name", BETA_OPTIMIZERS)
def test_optimizer_betas_reach_every_optimizer_and_win_over_adam_betas(name: str) -> None:
    _needs(name)
    cfg = validate(base(**{"--optimizer": name, "--adam_beta1": 0.8, "--adam_beta2": 0.95,
                           "--optimizer_beta1": 0.7, "--optimizer_beta2": 0.91}))
    assert _betas(cfg) == pytest.approx((0.7, 0.91))
    only_second = validate(base(**{"--optimizer": name, "--optimizer_beta2": 0.97}))
    assert _betas(only_second) == pytest.approx((0.9, 0.97))


@pytest.mark.parametrize("name", [n for n in BETA_OPTIMIZERS if n != "optimi-lion"])  # Lion has its own betas
def test_adam_kinds_take_adam_betas_when_optimizer_betas_are_unset(name: str) -> None:
    _needs(name)
    cfg = validate(base(**{"--optimizer": name, "--adam_beta1": 0.8, "--adam_beta2": 0.95}))
    assert _betas(cfg) == pytest.approx((0.8, 0.95))
    assert not any("adam_beta" in n for n in warnings_for(cfg))


def test_lion_keeps_its_own_betas_and_names_the_adam_betas_it_does_not_read() -> None:
    plain = validate(base(**{"--optimizer": "optimi-lion"}))
    assert _betas(plain) == pytest.approx((0.9, 0.99))
    assert not any("adam_beta" in n for n in warnings_for(plain))
    adam = validate(base(**{"--optimizer": "optimi-lion", "--adam_beta1": 0.8, "--adam_beta2": 0.95}))
    assert _betas(adam) == pytest.approx((0.9, 0.99))
    notes = [n for n in warnings_for(adam) if "has no effect with optimizer=optimi-lion" in n]
    assert len(notes) == 2 and "set optimizer_beta1" in notes[0] and "set optimizer_beta2" in notes[1], notes
    moved = validate(base(**{"--optimizer": "optimi-lion", "--adam_beta2": 0.95, "--optimizer_beta2": 0.95}))
    assert _betas(moved) == pytest.approx((0.9, 0.95))
    assert not any("adam_beta" in n for n in warnings_for(moved))


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_an_out_of_range_optimizer_beta_is_refused_by_name(value: float) -> None:
    assert errors_of(base(**{"--optimizer_beta2": value})) == {"optimizer_beta2": "must be in [0, 1)"}


def test_optimizer_betas_are_implemented_simpletuner_keys_with_its_unset_default() -> None:
    from simpletuner_core.config.compat import statuses
    from simpletuner_core.config.fields import CoreConfig, core_field_names

    found = statuses(core_field_names())
    assert found["optimizer_beta1"].status == found["optimizer_beta2"].status == "implemented"
    assert found["optimizer_offload_gradients"].status == "unsupported"  # the prefix rule still covers the rest
    assert CoreConfig().optimizer_beta1 is None and CoreConfig().optimizer_beta2 is None


# -- prediction_type -----------------------------------------------------------------------------------------------

def test_flow_matching_is_refused_for_a_ddpm_family_by_name() -> None:
    errors = errors_of(base(**{"--prediction_type": "flow_matching"}))
    assert list(errors) == ["prediction_type"]
    assert "pixart_sigma trains with a DDPM noise schedule" in errors["prediction_type"]
    assert validate(base(**{"--prediction_type": "v_prediction"})).prediction_type == "v_prediction"
    assert "must be one of" in errors_of(base(**{"--prediction_type": "sample"}))["prediction_type"]


# -- lora_target_modules with LyCORIS --------------------------------------------------------------------------

def _lycoris_names(tiny_pixart_dir: Any, **keys: Any) -> set[str]:
    """The module paths of the tiny PixArt transformer that got a LyCORIS module."""
    from diffusers import PixArtTransformer2DModel

    from simpletuner_pixart.trainer import PixArtSigmaTrainer

    model = PixArtTransformer2DModel.from_pretrained(tiny_pixart_dir / "transformer")
    cfg = validate(base(**{"--model_type": "lora", "--lora_type": "lycoris", "--lora_rank": 4, **keys}))
    handle = get_registry().adapters.get("lycoris").apply(model, cfg, list(PixArtSigmaTrainer.lora_targets), {})
    wrapped = {lora.lora_name for lora in handle.checkpoint_module.loras}
    return {name for name, _ in model.named_modules() if "lycoris_" + name.replace(".", "_") in wrapped}


def test_lycoris_adapts_only_the_modules_named_by_lora_target_modules(tiny_pixart_dir: Any) -> None:
    everything = _lycoris_names(tiny_pixart_dir)
    assert {n.rsplit(".", 1)[-1] for n in everything} >= {"to_q", "to_k", "to_v"}
    named = _lycoris_names(tiny_pixart_dir, **{"--lora_target_modules": "to_q, to_out.0"})
    assert named and all(n.endswith((".to_q", ".to_out.0")) for n in named), sorted(named)
    assert {n for n in everything if n.endswith((".to_q", ".to_out.0"))} == named
    errors = errors_of(base(**{"--model_type": "lora", "--lora_type": "lycoris", "--lora_rank": 4,
                               "--lora_target_modules": "to_q", "--lycoris_config": "/nonexistent.json"}))
    assert "lycoris_config" in errors  # the file is still checked


def test_lora_target_modules_under_an_explicit_lycoris_preset_is_named(tmp_path: Any) -> None:
    import json

    path = tmp_path / "lycoris.json"
    path.write_text(json.dumps({"algo": "lokr", "apply_preset": {"target_module": ["Attention"]}}))
    cfg = validate(base(**{"--model_type": "lora", "--lora_type": "lycoris", "--lycoris_config": str(path),
                           "--lora_target_modules": "to_q"}))
    assert any("lora_target_modules has no effect: lycoris_config's apply_preset" in n for n in warnings_for(cfg))
    path.write_text(json.dumps({"algo": "lokr"}))
    assert not any("lora_target_modules" in n for n in warnings_for(cfg))
