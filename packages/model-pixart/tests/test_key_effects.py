"""Config keys checked by their effect on the tiny PixArt model: each test fails when the key is ignored
(the training target, recomputation in backward, the drawn noise, where caches land, who waits for whom)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import validate
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry

NO_RESOLUTION = {"resolution": None, "aspect_ratio": None}


def loaded(cfg: Any, home: Path) -> Any:
    from simpletuner_pixart.trainer import PixArtSigmaTrainer

    trainer = PixArtSigmaTrainer(cfg, get_registry().family("pixart"), home / "cache" / "models")
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    return trainer


def train(raw: dict[str, Any], home: Path, job_id: str = "job") -> tuple[int, Any, list[Any]]:
    code, result = run_job(validate(raw), home, get_registry(), job_id=job_id)
    return code, result, read_events(home / "jobs" / job_id / "events.jsonl")


def denoise(model: Any, noisy: torch.Tensor, text: dict[str, torch.Tensor], steps: torch.Tensor) -> torch.Tensor:
    """The transformer's prediction, without its learned-variance half."""
    out = model(noisy, encoder_hidden_states=text["prompt_embeds"], encoder_attention_mask=text["prompt_attention_mask"],
                timestep=steps, added_cond_kwargs=NO_RESOLUTION, return_dict=False)[0]
    return out.chunk(2, dim=1)[0] if out.shape[1] == 2 * noisy.shape[1] else out


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_prediction_type_is_the_training_target(home: Path, tiny_cfg: Any, prediction_type: str) -> None:
    """One fixed batch, noise and timesteps: the family's loss is the MSE against the hand-computed target."""
    trainer = loaded(validate(tiny_cfg(prediction_type=prediction_type, snr_gamma=None)), home)
    model = trainer.trainable()
    generator = torch.Generator().manual_seed(0)
    latents = 3 * torch.randn(2, 4, 8, 8, generator=generator)  # far from unit scale: v and ε differ clearly
    noise = torch.randn(2, 4, 8, 8, generator=generator)
    steps = torch.tensor([100, 900])
    text = trainer.encode_prompts(["a red square", "a blue circle"])
    with torch.no_grad():
        loss = float(trainer.loss_at(model, latents, text, noise, steps))
        alpha = trainer.noise_scheduler.alphas_cumprod[steps].view(-1, 1, 1, 1)
        pred = denoise(model, alpha.sqrt() * latents + (1 - alpha).sqrt() * noise, text, steps)
        epsilon_mse = float(F.mse_loss(pred, noise))
        v_mse = float(F.mse_loss(pred, alpha.sqrt() * noise - (1 - alpha).sqrt() * latents))
    assert abs(v_mse - epsilon_mse) > 0.5 * epsilon_mse
    assert loss == pytest.approx(v_mse if prediction_type == "v_prediction" else epsilon_mse, rel=1e-4)


def block_calls(raw: dict[str, Any], home: Path, job_id: str) -> tuple[int, int, list[float]]:
    """(transformer-block calls, number of blocks, losses) over a whole run, counted with a global forward
    pre-hook: recomputation in backward calls each block a second time. (A post-hook would miss it: torch's
    checkpoint stops the recomputed forward early, once it has the tensors backward needs.)"""
    from diffusers.models.attention import BasicTransformerBlock

    calls = 0

    def count(module: torch.nn.Module, _args: Any) -> None:
        nonlocal calls
        calls += isinstance(module, BasicTransformerBlock)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        code, result, _ = train(raw, home, job_id)
    finally:
        handle.remove()
    assert code == 0
    blocks = json.loads((Path(raw["--pretrained_model_name_or_path"]) / "transformer" / "config.json")
                        .read_text())["num_layers"]
    return calls, blocks, result.losses


def test_gradient_checkpointing_recomputes_blocks_in_backward(home: Path, tiny_cfg: Any, tmp_path: Path) -> None:
    steps = 2
    plain, blocks, plain_losses = block_calls(tiny_cfg(max_train_steps=steps, gradient_checkpointing=False),
                                              home, "plain")
    raw = tiny_cfg(max_train_steps=steps, gradient_checkpointing=True, output_dir=str(tmp_path / "ckpt"))
    checkpointed, _, losses = block_calls(raw, home, "checkpointed")
    assert plain == steps * blocks
    assert checkpointed == 2 * steps * blocks
    assert losses == pytest.approx(plain_losses, rel=1e-5)


class NoisyInputs(torch.nn.Module):
    """The real transformer, recording the noisy latents and timesteps it is called with."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, hidden: torch.Tensor, **kwargs: Any) -> Any:
        self.seen.append((hidden.detach().clone(), kwargs["timestep"].clone()))
        return self.inner(hidden, **kwargs)


def test_noise_offset_adds_a_per_channel_constant_to_the_noise(home: Path, tiny_cfg: Any) -> None:
    import attrs

    trainer = loaded(validate(tiny_cfg(noise_offset=0.0)), home)
    model = NoisyInputs(trainer.trainable())
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = trainer.encode_prompts(["a red square"] * 4)
    losses, noises = [], []
    for offset in (0.0, 0.5):
        trainer.cfg = attrs.evolve(trainer.cfg, noise_offset=offset)
        torch.manual_seed(0)
        with torch.no_grad():
            losses.append(float(trainer.loss(model, latents, text)))
        noisy, steps = model.seen[-1]
        alpha = trainer.noise_scheduler.alphas_cumprod[steps].view(-1, 1, 1, 1)
        noises.append((noisy - alpha.sqrt() * latents) / (1 - alpha).sqrt())
    shift = noises[1] - noises[0]  # same seed: the same Gaussian draw, plus the offset term
    per_channel = shift.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(shift, per_channel.expand_as(shift), atol=1e-3)
    assert per_channel.abs().max() > 0.1
    assert losses[0] != losses[1]


def test_cache_dir_text_holds_the_text_embeds(home: Path, tiny_cfg: Any, demo_images: Path) -> None:
    """A text-embeds dataset without its own cache_dir falls back to the config's cache_dir_text."""
    loader = home / "config" / "no-text-cache.json"
    loader.parent.mkdir(parents=True, exist_ok=True)
    loader.write_text(json.dumps([
        {"id": "toy", "type": "local", "dataset_type": "image", "instance_data_dir": str(demo_images),
         "caption_strategy": "textfile", "resolution": 64, "resolution_type": "pixel_area", "crop": True,
         "crop_style": "center", "crop_aspect": "square", "cache_dir_vae": str(home / "cache" / "vae")},
        {"id": "toy-text", "type": "local", "dataset_type": "text_embeds", "default": True},
    ]))
    embeds = home / "embeds-here"
    code, _, _ = train(tiny_cfg(max_train_steps=1, data_backend_config=str(loader), cache_dir_text=str(embeds)),
                       home)
    assert code == 0
    assert [p for p in embeds.rglob("*") if p.is_file()]
    assert not (home / "cache" / "text").exists()


@pytest.mark.parametrize("background", [False, True])
def test_validation_external_background_does_not_hold_training(home: Path, tiny_cfg: Any,
                                                               background: bool) -> None:
    """The step-1 validation script sleeps; in the background, step 2 finishes before the script does."""
    sleep = 3.0 if background else 0.0  # the foreground order holds whatever the script's duration
    raw = tiny_cfg(max_train_steps=3, validation_steps=1, validation_prompt="a red square",
                   validation_method="external-script", validation_external_background=background,
                   validation_external_script=f"{sys.executable} -c 'import time; time.sleep({sleep})'")
    code, _, events = train(raw, home)
    assert code == 0
    step_two = next(e for e in events if e.type == "training.status" and e.data["step"] == 2)
    runs = [e for e in events if e.type == "hook.script" and e.data["hook"] == "validation"]
    first = next(e for e in runs if not e.data.get("skipped"))  # background: later runs skip while it sleeps
    assert first.data["returncode"] == 0 and first.data["background"] is background
    assert (first.id > step_two.id) is background
