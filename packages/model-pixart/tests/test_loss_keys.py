"""snr_gamma / use_soft_min_snr (min-SNR-γ loss weighting) and rescale_betas_zero_snr on the tiny PixArt model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import ConfigInvalid, validate, warnings_for
from simpletuner_core.plugins import get_registry

STEPS = [0, 10, 100, 400, 999]


def train(raw: dict[str, Any], home: Path, job_id: str) -> tuple[int, Any]:
    return run_job(validate(raw), home, get_registry(), job_id=job_id)


def _trainer(tiny_cfg: Any, home: Path, **overrides: Any) -> Any:
    import torch

    from simpletuner_pixart.trainer import PixArtSigmaTrainer

    cfg = validate(tiny_cfg(**overrides))
    trainer = PixArtSigmaTrainer(cfg, get_registry().family("pixart"), home)
    logs: list[str] = []
    trainer.load(torch.device("cpu"), torch.float32, logs.append)
    trainer.logs = logs
    return trainer


def _batch(trainer: Any) -> tuple[Any, ...]:
    import torch

    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(len(STEPS), 4, 8, 8, generator=gen)
    noise = torch.randn(len(STEPS), 4, 8, 8, generator=gen)
    text = trainer.encode_prompts(["a red square", "a blue circle", "the green dot", "a photo", ""])
    return latents, noise, torch.tensor(STEPS), text


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_weights_equal_the_formula_on_known_timesteps(prediction: str, soft: bool) -> None:
    import torch
    from diffusers import DDPMScheduler

    from simpletuner_core.training.loss_weighting import min_snr_weights, snr_at

    gamma = 5.0
    alphas = DDPMScheduler().alphas_cumprod
    snr = snr_at(alphas, torch.tensor(STEPS))
    expected = []
    for t in STEPS:
        a = float(alphas[t])
        s = a / (1 - a)
        clipped = s * gamma / (s + gamma) if soft else min(s, gamma)
        expected.append(clipped / s if prediction == "epsilon" else clipped / (s + 1))
    got = min_snr_weights(snr, gamma, prediction, soft=soft)
    assert torch.allclose(got, torch.tensor(expected), rtol=1e-5), (got, expected)
    if not soft and prediction == "epsilon":
        assert got[0] < 1 and got[-1] == 1  # clipped at low noise, untouched at high noise


def test_zero_snr_gives_finite_weights() -> None:
    import torch

    from simpletuner_core.training.loss_weighting import min_snr_weights

    snr = torch.tensor([0.0, 1.0, 50.0])
    assert min_snr_weights(snr, 5.0, "epsilon").tolist() == pytest.approx([1.0, 1.0, 0.1])
    assert min_snr_weights(snr, 5.0, "epsilon", soft=True)[0] == 1.0
    assert min_snr_weights(snr, 5.0, "v_prediction")[0] == 0.0


@pytest.mark.parametrize(("prediction", "soft"), [("epsilon", False), ("v_prediction", False), ("epsilon", True)])
def test_mean_loss_equals_a_hand_computed_weighted_mse(tiny_cfg: Any, home: Path, prediction: str,
                                                       soft: bool) -> None:
    import torch

    trainer = _trainer(tiny_cfg, home, snr_gamma=5.0, use_soft_min_snr=soft, prediction_type=prediction)
    latents, noise, steps, text = _batch(trainer)
    model = trainer.trainable()
    with torch.no_grad():
        loss = trainer.loss_at(model, latents, text, noise, steps)
        noisy = trainer.noise_scheduler.add_noise(latents, noise, steps)
        pred = model(noisy, encoder_hidden_states=text["prompt_embeds"],
                     encoder_attention_mask=text["prompt_attention_mask"], timestep=steps,
                     added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample[:, :4]
    alphas = trainer.noise_scheduler.alphas_cumprod
    total = 0.0
    for i, t in enumerate(STEPS):
        a = float(alphas[t])
        s = a / (1 - a)
        target = noise[i] if prediction == "epsilon" else a ** 0.5 * noise[i] - (1 - a) ** 0.5 * latents[i]
        clipped = s * 5.0 / (s + 5.0) if soft else min(s, 5.0)
        weight = clipped / s if prediction == "epsilon" else clipped / (s + 1)
        total += weight * float(((pred[i] - target) ** 2).mean())
    assert float(loss) == pytest.approx(total / len(STEPS), rel=1e-5)


def test_snr_gamma_changes_the_loss_and_its_gradients(tiny_cfg: Any, home: Path) -> None:
    plain = _trainer(tiny_cfg, home)
    weighted = _trainer(tiny_cfg, home, snr_gamma=1.0)
    latents, noise, steps, text = _batch(plain)
    grads = []
    losses = []
    for trainer in (plain, weighted):
        model = trainer.trainable()
        model.zero_grad()
        loss = trainer.loss_at(model, latents, text, noise, steps)
        loss.backward()
        losses.append(float(loss))
        grads.append(model.proj_out.weight.grad.clone())
    assert losses[1] < losses[0]  # every weight is <= 1 for ε, and < 1 for the low-noise steps
    assert not grads[0].allclose(grads[1])


def test_training_with_snr_gamma_differs_from_without(tiny_cfg: Any, home: Path) -> None:
    code, plain = train(tiny_cfg(max_train_steps=3), home, "plain")
    assert code == 0
    code, weighted = train(tiny_cfg(max_train_steps=3, snr_gamma=1.0, output_dir=str(home / "out-snr")), home, "snr")
    assert code == 0
    # Same seed, same first batch: only the weighting differs at step 1 (every ε weight is <= 1), and after it
    # the weights themselves have moved differently.
    assert weighted.losses[0] < plain.losses[0] and weighted.losses[1:] != plain.losses[1:]


def test_rescale_betas_zero_snr_reaches_zero_terminal_snr(tiny_cfg: Any, home: Path) -> None:
    plain = _trainer(tiny_cfg, home)
    assert float(plain.noise_scheduler.alphas_cumprod[-1]) > 0
    zero = _trainer(tiny_cfg, home, rescale_betas_zero_snr=True, prediction_type="v_prediction")
    assert float(zero.noise_scheduler.alphas_cumprod[-1]) == 0.0
    assert float(zero.alphas[-1]) == 0.0  # what the loss weighting reads
    pipe = zero._pipeline(zero.trainable())
    assert pipe.scheduler.config.rescale_betas_zero_snr is True  # validation samples the same schedule
    assert not any("rescale_betas_zero_snr with ε" in line for line in zero.logs)
    eps = _trainer(tiny_cfg, home, rescale_betas_zero_snr=True)
    assert any("rescale_betas_zero_snr with ε" in line for line in eps.logs)


def test_zero_snr_with_epsilon_is_warned(tiny_cfg: Any) -> None:
    assert any(n.startswith("rescale_betas_zero_snr is meant for v-prediction")
               for n in warnings_for(validate(tiny_cfg(rescale_betas_zero_snr=True))))
    assert warnings_for(validate(tiny_cfg(rescale_betas_zero_snr=True, prediction_type="v_prediction"))) == []


def _errors(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as info:
        validate(raw)
    return {e.path: e.message for e in info.value.errors}


def test_soft_min_snr_needs_snr_gamma(tiny_cfg: Any) -> None:
    assert "needs snr_gamma" in _errors(tiny_cfg(use_soft_min_snr=True))["use_soft_min_snr"]
    assert "must be > 0" in _errors(tiny_cfg(snr_gamma=-1))["snr_gamma"]
    validate(tiny_cfg(use_soft_min_snr=True, snr_gamma=5))


@pytest.mark.parametrize(("key", "value"), [("snr_gamma", 5.0), ("use_soft_min_snr", True),
                                            ("rescale_betas_zero_snr", True)])
def test_flow_matching_refuses_the_ddpm_keys_by_name(key: str, value: Any) -> None:
    raw = {"--model_family": "flux", "--model_flavour": "tiny", "--output_dir": "/tmp/o",
           "--data_backend_config": "x.json", "--max_train_steps": 1, f"--{key}": value}
    if key == "use_soft_min_snr":
        raw["--snr_gamma"] = 5.0
    errors = _errors(raw)
    assert "flux does not train on a DDPM noise schedule" in errors[key]
    validate({**raw, f"--{key}": None if key == "snr_gamma" else False, "--snr_gamma": None})  # off: accepted
