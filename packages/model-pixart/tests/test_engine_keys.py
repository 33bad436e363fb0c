"""Training-engine keys on the tiny PixArt model: clipping, epoch cadence, interval checkpointing, the base-model
benchmark, the eval loss, VAE batching and on-demand latents."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import ConfigInvalid, validate
from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry
from simpletuner_core.training import evaluation, grad_checkpointing
from simpletuner_core.training.clipping import clip_gradients
from simpletuner_core.training.engine import Trainer, plan_only

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from conftest import write_dataloader


def train(raw: dict[str, Any], home: Path, job_id: str = "job") -> tuple[int, Any, list[Any]]:
    code, result = run_job(validate(raw), home, get_registry(), job_id=job_id)
    return code, result, read_events(home / "jobs" / job_id / "events.jsonl")


def steps_of(events: list[Any], kind: str) -> list[int]:
    return [e.data["step"] for e in events if e.type == kind]


def _transformer(tiny_dir: Path, layers: int | None = None) -> Any:
    from diffusers import PixArtTransformer2DModel

    model = PixArtTransformer2DModel.from_pretrained(str(tiny_dir), subfolder="transformer")
    if layers is None:
        return model
    torch.manual_seed(0)  # the tiny model has 2 blocks: a deeper one of the same shape shows the interval
    return PixArtTransformer2DModel.from_config({**model.config, "num_layers": layers})


def _inputs(seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {"hidden_states": torch.randn(2, 4, 8, 8, generator=g),
            "encoder_hidden_states": torch.randn(2, 5, 32, generator=g),
            "encoder_attention_mask": torch.ones(2, 5), "timestep": torch.tensor([10, 500]),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}, "return_dict": False}


def _grads(model: Any) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


# -- 1. grad_clip_method -----------------------------------------------------------------------------------------
def test_value_and_norm_clipping_match_torch_and_differ(tiny_pixart_dir: Path) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    clipped = {}
    for method in ("value", "norm"):
        model = _transformer(tiny_pixart_dir)
        model(**_inputs())[0].pow(2).mean().backward()
        raw = _grads(model)
        params = [p for p in model.parameters() if p.grad is not None]
        clip_gradients(accelerator, params, method, 1e-3)
        ref_params = [torch.nn.Parameter(torch.zeros_like(g)) for g in raw]
        for p, g in zip(ref_params, raw, strict=True):
            p.grad = g.clone()
        if method == "value":
            torch.nn.utils.clip_grad_value_(ref_params, 1e-3)
        else:
            torch.nn.utils.clip_grad_norm_(ref_params, 1e-3)
        reference = [p.grad for p in ref_params]
        got = _grads(model)
        assert all(torch.equal(a, b) for a, b in zip(got, reference, strict=True)), method
        assert not all(torch.equal(a, b) for a, b in zip(got, raw, strict=True))  # clipping did something
        clipped[method] = got
    assert not all(torch.allclose(a, b) for a, b in zip(clipped["value"], clipped["norm"], strict=True))
    model = _transformer(tiny_pixart_dir)
    model(**_inputs())[0].pow(2).mean().backward()
    before = _grads(model)
    clip_gradients(accelerator, [p for p in model.parameters() if p.grad is not None], "value", 0.0)
    assert all(torch.equal(a, b) for a, b in zip(_grads(model), before, strict=True))  # 0 disables


def test_clip_method_changes_the_trained_weights(home: Path, tiny_cfg: Any, tmp_path: Path) -> None:
    losses = {}
    for method in ("value", "norm"):
        raw = tiny_cfg(max_train_steps=2, max_grad_norm=0.01, grad_clip_method=method,
                       output_dir=str(tmp_path / method))
        code, result, _ = train(raw, home, job_id=method)
        assert code == 0
        losses[method] = result.losses
    assert losses["value"][0] == losses["norm"][0]  # same first batch, same weights before the first update
    assert losses["value"][1] != losses["norm"][1]  # different updates
    with pytest.raises(ConfigInvalid) as info:
        validate(tiny_cfg(grad_clip_method="clamp"))
    assert info.value.errors[0].path == "grad_clip_method"


# -- 2. epoch intervals -----------------------------------------------------------------------------------------
def test_epoch_intervals_add_checkpoints_and_validations_never_twice(home: Path, tiny_cfg: Any) -> None:
    # 12 images / batch 4 = 3 steps per epoch, 4 epochs = 12 steps; epoch 2 ends at step 6, epoch 4 at step 12.
    raw = tiny_cfg(max_train_steps=0, num_train_epochs=4, checkpoint_step_interval=4, checkpoint_epoch_interval=2,
                   validation_prompt="a red square", validation_step_interval=3, validation_epoch_interval=2,
                   validation_num_inference_steps=1, validation_resolution="64x64")
    code, _, events = train(raw, home)
    assert code == 0
    assert steps_of(events, "checkpoint.saved") == [4, 6, 8]  # the final step saves the model, not a checkpoint
    assert sorted(p.name for p in (home / "output").glob("checkpoint-*")) == [
        "checkpoint-4", "checkpoint-6", "checkpoint-8"]
    assert steps_of(events, "validation.started") == [3, 6, 9, 12]  # step 6 is due twice, validated once


# -- 3. gradient_checkpointing_interval ------------------------------------------------------------------------
def _run_counting(model: Any) -> tuple[float, list[torch.Tensor], int]:
    calls = [0]
    for block in model.transformer_blocks:  # a pre-hook: torch stops a recomputation early, before post-hooks
        block.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    torch.manual_seed(0)
    loss = model(**_inputs())[0].pow(2).mean()
    forward = calls[0]
    loss.backward()
    return float(loss), _grads(model), calls[0] - forward


@pytest.mark.parametrize("interval", [2, 3])
def test_interval_checkpointing_recomputes_every_nth_block_with_the_same_numbers(tiny_pixart_dir: Path,
                                                                                 interval: int) -> None:
    plain = _transformer(tiny_pixart_dir, layers=6)
    grad_checkpointing.enable(plain, None)
    sparse = _transformer(tiny_pixart_dir, layers=6)
    grad_checkpointing.enable(sparse, interval)
    blocks = len(plain.transformer_blocks)
    loss_a, grads_a, recomputed_a = _run_counting(plain)
    loss_b, grads_b, recomputed_b = _run_counting(sparse)
    assert recomputed_a == blocks
    assert recomputed_b == math.ceil(blocks / interval)
    assert loss_a == loss_b
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads_a, grads_b, strict=True))


def test_interval_checkpointing_trains_like_plain_checkpointing(home: Path, tiny_cfg: Any, tmp_path: Path) -> None:
    from simpletuner_core.config import warnings_for

    _, plain, _ = train(tiny_cfg(max_train_steps=3, gradient_checkpointing=True,
                                 output_dir=str(tmp_path / "a")), home, "a")
    _, sparse, _ = train(tiny_cfg(max_train_steps=3, gradient_checkpointing=True, gradient_checkpointing_interval=2,
                                  output_dir=str(tmp_path / "b")), home, "b")
    assert sparse.losses == pytest.approx(plain.losses, rel=1e-6)
    notes = warnings_for(validate(tiny_cfg(gradient_checkpointing_interval=2)))
    assert any("gradient_checkpointing_interval has no effect" in n for n in notes)
    assert not warnings_for(validate(tiny_cfg(gradient_checkpointing_interval=2, gradient_checkpointing=True)))
    with pytest.raises(ConfigInvalid) as info:
        validate(tiny_cfg(gradient_checkpointing=True, gradient_checkpointing_interval=0))
    assert info.value.errors[0].path == "gradient_checkpointing_interval"


# -- 4. disable_benchmark -----------------------------------------------------------------------------------------
def test_base_model_benchmark_renders_step_zero_unless_disabled_or_resuming(home: Path, tiny_cfg: Any,
                                                                            tmp_path: Path) -> None:
    common = {"validation_prompt": "a red square", "validation_step_interval": 0, "validation_num_inference_steps": 1,
              "validation_resolution": "64x64", "validation_disable_unconditional": True}
    raw = tiny_cfg(max_train_steps=2, checkpoint_step_interval=1, disable_benchmark=False, **common)
    code, _, events = train(raw, home, "on")
    assert code == 0
    assert steps_of(events, "validation.image") == [0, 2]
    stages = [(e.data["stage"], e.data["status"]) for e in events if e.type == "job.stage"]
    assert [s for s in stages if s[0] == "benchmark_base_model"] == [("benchmark_base_model", "running"),
                                                                     ("benchmark_base_model", "completed")]
    assert (home / "output" / "validation" / "step-000000-0.png").is_file()
    first = next(e for e in events if e.type == "validation.image").data
    assert first["trigger"] == "scheduled" and first["validation_type"] == "final"
    resumed = tiny_cfg(max_train_steps=2, checkpoint_step_interval=1, disable_benchmark=False,
                       resume_from_checkpoint="latest", **common)
    code, _, events = train(resumed, home, "resumed")
    assert code == 0 and steps_of(events, "validation.image") == [2]  # a resume is no longer the base model
    off = tiny_cfg(max_train_steps=1, disable_benchmark=True, output_dir=str(tmp_path / "off"), **common)
    code, _, events = train(off, home, "off")
    assert code == 0 and steps_of(events, "validation.image") == [1]
    assert "benchmark_base_model" not in [e.data["stage"] for e in events if e.type == "job.stage"]


# -- 5. eval loss --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simpletuner_core.demo_data import write_demo_dataset

    directory = tmp_path_factory.mktemp("eval") / "held-out"
    write_demo_dataset(directory, count=6, size=64)
    return directory


def with_eval(home: Path, raw: dict[str, Any], images: Path, eval_dir: Path, **eval_overrides: Any) -> dict[str, Any]:
    path = write_dataloader(home, images)
    entries = json.loads(path.read_text())
    entries.insert(1, {"id": "held-out", "type": "local", "dataset_type": "eval", "instance_data_dir": str(eval_dir),
                       "caption_strategy": "textfile", "resolution": 64, "resolution_type": "pixel_area",
                       "crop": True, "crop_style": "center", "crop_aspect": "square",
                       "cache_dir_vae": str(home / "cache" / "vae-eval"), **eval_overrides})
    path.write_text(json.dumps(entries))
    return {**raw, "--data_backend_config": str(path)}


def test_eval_dataset_is_held_out_and_capped(home: Path, tiny_cfg: Any, demo_images: Path, eval_images: Path) -> None:
    plan = plan_only(validate(with_eval(home, tiny_cfg(num_eval_images=2), demo_images, eval_images)), home)
    assert len(plan.samples) == 12 and {s.dataset_id for s in plan.samples} == {"toy"}
    assert [Path(s.path).parent for s in plan.eval_samples] == [eval_images, eval_images]
    assert not {s.path for s in plan.samples} & {s.path for s in plan.eval_samples}
    assert "held-out (eval): 6 images found, 6 usable" in plan.render()
    many = plan_only(validate(with_eval(home, tiny_cfg(num_eval_images=50), demo_images, eval_images)), home)
    assert len(many.eval_samples) == 6 and len(many.samples) == 12  # min(n, available), training untouched
    with pytest.raises(ConfigInvalid) as info:
        plan_only(validate(with_eval(home, tiny_cfg(eval_dataset_id="nope"), demo_images, eval_images)), home)
    assert info.value.errors[0].path == "eval_dataset_id" and "'nope'" in info.value.errors[0].message
    assert "held-out" in info.value.errors[0].message
    named = plan_only(validate(with_eval(home, tiny_cfg(eval_dataset_id="held-out"), demo_images, eval_images)), home)
    assert len(named.eval_samples) == 4


def test_eval_loss_events_at_step_and_epoch_cadence(home: Path, tiny_cfg: Any, demo_images: Path,
                                                   eval_images: Path) -> None:
    raw = with_eval(home, tiny_cfg(max_train_steps=6, eval_steps_interval=2, eval_epoch_interval=1,
                                   eval_timesteps=4), demo_images, eval_images)
    code, _, events = train(raw, home)
    assert code == 0
    metrics = [e for e in events if e.type == "training.metric"]
    assert [e.data["step"] for e in metrics] == [2, 3, 4, 6]  # every 2 steps, plus the end of each 3-step epoch
    values = [e.data["metrics"]["eval_loss"] for e in metrics]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert len(set(values)) == len(values)  # the weights changed between evaluations
    from PIL import Image

    from simpletuner_core.plot import EVAL_COLOUR

    with Image.open(home / "output" / "training-plot.png") as image:
        assert EVAL_COLOUR in set(image.convert("RGB").getdata())


def test_eval_loss_disable_and_no_eval_dataset_mean_no_metric(home: Path, tiny_cfg: Any, demo_images: Path,
                                                              eval_images: Path, tmp_path: Path) -> None:
    raw = with_eval(home, tiny_cfg(max_train_steps=2, eval_steps_interval=1, eval_loss_disable=True),
                    demo_images, eval_images)
    code, _, events = train(raw, home, "disabled")
    assert code == 0 and not steps_of(events, "training.metric")
    code, _, events = train(tiny_cfg(max_train_steps=2, eval_steps_interval=1, output_dir=str(tmp_path / "x")),
                            home, "none")
    assert code == 0 and not steps_of(events, "training.metric")


def test_eval_loss_is_deterministic_for_the_same_weights(tiny_pixart_dir: Path, tiny_cfg: Any, home: Path) -> None:
    cfg = validate(tiny_cfg())
    family = get_registry().family("pixart_sigma").trainer()(cfg, get_registry().family("pixart_sigma"),
                                                              home / "models")
    family.load(torch.device("cpu"), torch.float32, lambda *_: None)
    model = family.trainable()
    model.train()
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(3, 4, 8, 8, generator=g)
    text = family.encode_prompts(["a", "b", "c"])

    def run() -> float:
        return evaluation.eval_loss(family, model, [[0]], lambda _: (latents, text), timesteps=5, seed=1,
                                    device=torch.device("cpu"))

    state = torch.random.get_rng_state()
    first, second = run(), run()
    assert first == second and math.isfinite(first)
    assert torch.equal(torch.random.get_rng_state(), state)  # training's RNG is untouched
    assert model.training  # back in train mode
    with torch.no_grad():
        model.transformer_blocks[0].ff.net[2].weight.add_(0.1)
    assert run() != first


# -- 6/7. vae_batch_size, vae_cache_ondemand -----------------------------------------------------------------------
def _trainer_and_caches(raw: dict[str, Any], home: Path) -> tuple[Trainer, Any, Any, Any]:
    from simpletuner_core.training.data_setup import make_plan

    cfg = validate(raw)
    registry = get_registry()
    trainer = Trainer(cfg, job_id="cache", home=home, emitter=EventEmitter("cache", _Sink()), registry=registry)
    datasets, plan = make_plan(cfg, home, registry, trainer.family.size_multiple, 0)
    family = trainer.family.trainer()(cfg, trainer.family, home / "models")
    family.load(torch.device("cpu"), torch.float32, lambda *_: None)
    return trainer, family, datasets, plan


class _Sink:
    def append(self, event: Any) -> Any:
        return event

    def close(self) -> None:
        pass


def test_vae_batch_size_sets_encoder_batches_and_keeps_latents(home: Path, tiny_cfg: Any, demo_images: Path) -> None:
    latents = {}
    for size in (1, 5, 8):
        raw = tiny_cfg(vae_batch_size=size)
        raw["--data_backend_config"] = str(write_dataloader(home, demo_images,
                                                            cache_dir_vae=str(home / "cache" / f"vae{size}")))
        trainer, family, datasets, plan = _trainer_and_caches(raw, home)
        shapes: list[int] = []
        family.vae.encoder.register_forward_hook(lambda _m, args, _o, seen=shapes: seen.append(args[0].shape[0]))
        caches, _ = trainer._fill_caches(family, datasets, plan)
        expected = [size] * (12 // size) + ([12 % size] if 12 % size else [])
        assert shapes == expected
        latents[size] = torch.stack([caches["toy"].load(s) for s in plan.samples])
    # Batching changes the order of float reductions in conv kernels: equal to 1e-6, not always bit for bit.
    assert torch.allclose(latents[1], latents[8], atol=1e-6, rtol=0)
    assert torch.allclose(latents[5], latents[8], atol=1e-6, rtol=0)
    with pytest.raises(ConfigInvalid) as info:
        validate(tiny_cfg(vae_batch_size=0))
    assert info.value.errors[0].path == "vae_batch_size"


def test_vae_cache_ondemand_encodes_only_drawn_batches_with_the_same_losses(home: Path, tiny_cfg: Any,
                                                                           demo_images: Path, tmp_path: Path) -> None:
    lazy_dir = home / "cache" / "vae-lazy"
    raw = tiny_cfg(max_train_steps=2, vae_cache_ondemand=True, output_dir=str(tmp_path / "lazy"))
    raw["--data_backend_config"] = str(write_dataloader(home, demo_images, cache_dir_vae=str(lazy_dir)))
    trainer, family, datasets, plan = _trainer_and_caches(raw, home)
    trainer._fill_caches(family, datasets, plan)
    assert not list(lazy_dir.rglob("*.safetensors"))  # nothing before the first step
    code, lazy, _ = train(raw, home, "lazy")
    assert code == 0
    assert len(list(lazy_dir.rglob("*.safetensors"))) == 8  # 2 steps × batch 4 of 12 distinct images
    eager_raw = tiny_cfg(max_train_steps=2, output_dir=str(tmp_path / "eager"))
    eager_raw["--data_backend_config"] = str(write_dataloader(home, demo_images,
                                                              cache_dir_vae=str(home / "cache" / "vae-eager")))
    code, eager, _ = train(eager_raw, home, "eager")
    assert code == 0 and len(list((home / "cache" / "vae-eager").rglob("*.safetensors"))) == 12
    assert lazy.losses == eager.losses
