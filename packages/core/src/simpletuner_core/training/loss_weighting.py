"""Min-SNR-γ loss weighting for families trained on a DDPM noise schedule (ε- or v-prediction).

Hang et al. 2023 ("Efficient Diffusion Training via Min-SNR Weighting Strategy") weight each sample's loss by
``min(SNR, γ)`` measured in x₀ space, so the many easy low-noise timesteps stop dominating the gradient. Turned
into a weight on the loss a family actually computes:

* ε-prediction: ``min(SNR, γ) / SNR``          (the ε loss already carries a factor SNR in x₀ space)
* v-prediction: ``min(SNR, γ) / (SNR + 1)``    (the v loss carries SNR + 1)

The soft variant replaces the hard ``min`` with the smooth harmonic minimum ``SNR·γ / (SNR + γ)`` (the
"soft-min-SNR" of Crowson et al. 2024, Hourglass Diffusion Transformers, whose x₀-space weight
``1/(σ² + σ_data²)`` is this with SNR = σ_data²/σ² and γ = σ_data²): it lies between ``min/2`` and ``min``,
tends to SNR at high noise and to γ at low noise, and has no kink at SNR = γ. That gives ``γ / (SNR + γ)`` for ε
and ``SNR·γ / ((SNR + γ)(SNR + 1))`` for v.

``SNR(t) = ᾱ_t / (1 - ᾱ_t)`` from the scheduler's ``alphas_cumprod``. A zero-terminal-SNR schedule has SNR = 0 at
the last timestep: the ε weights take their limit 1 there (no 0/0), the v weights are 0.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")


def snr_at(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``ᾱ/(1-ᾱ)`` of each sampled timestep, in float32 on the timesteps' device."""
    alpha = alphas_cumprod.to(timesteps.device, torch.float32)[timesteps]
    return alpha / (1.0 - alpha)


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction_type: str, soft: bool = False) -> torch.Tensor:
    """Per-sample loss weights (see the module docstring for the formulas)."""
    if gamma <= 0:
        raise ValueError(f"snr_gamma must be > 0, got {gamma!r}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"min-SNR weighting needs prediction_type epsilon or v_prediction, got {prediction_type!r}")
    snr = snr.float()
    if prediction_type == "epsilon":
        if soft:
            return gamma / (snr + gamma)
        return torch.where(snr > gamma, gamma / snr.clamp_min(gamma), torch.ones_like(snr))
    clipped = snr * gamma / (snr + gamma) if soft else snr.clamp_max(gamma)
    return clipped / (snr + 1.0)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``weights[i] * mean((pred[i] - target[i])²)``."""
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return (weights.to(per_sample) * per_sample).mean()
