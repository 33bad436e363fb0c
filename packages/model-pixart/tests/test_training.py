"""Real training on the tiny PixArt model: loss goes down, outputs load back, events tell the story."""

from __future__ import annotations

import base64
import io
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import ConfigInvalid, validate
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from conftest import write_dataloader


def train(raw: dict[str, Any], home: Path) -> tuple[int, Any, list[Any]]:
    code, result = run_job(validate(raw), home, get_registry(), job_id="job")
    return code, result, read_events(home / "jobs" / "job" / "events.jsonl")


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


def dropped(losses: list[float], window: int = 8) -> float:
    return statistics.fmean(losses[:window]) / statistics.fmean(losses[-window:])


def test_full_finetune_learns_and_loads_back(home: Path, tiny_cfg: Any) -> None:
    code, result, events = train(tiny_cfg(max_train_steps=40), home)
    assert code == 0 and result.status == "completed" and result.global_step == 40
    assert dropped(result.losses) > 1.5, result.losses
    kinds = [e.type for e in events]
    assert kinds[0] == "job.started" and kinds[-1] == "job.completed"
    assert kinds.index("job.plan") < kinds.index("training.status")
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    status = of_type(events, "training.status")
    assert [e.data["step"] for e in status] == list(range(1, 41))
    last = status[-1].data
    assert last["total"] == 40 and last["percent"] == 100.0 and last["eta_seconds"] == 0.0
    from diffusers import PixArtSigmaPipeline

    pipe = PixArtSigmaPipeline.from_pretrained(str(home / "output"))
    image = pipe("a red square", num_inference_steps=2, height=64, width=64, use_resolution_binning=False,
                 max_sequence_length=16, clean_caption=False).images[0]
    assert image.size == (64, 64)


def test_lora_trains_only_adapter_and_exports_diffusers_keys(home: Path, tiny_cfg: Any,
                                                             tiny_pixart_dir: Path) -> None:
    code, result, _ = train(tiny_cfg(model_type="lora", lora_rank=8, learning_rate=1e-2, max_train_steps=40),
                            home)
    assert code == 0
    assert dropped(result.losses) > 1.2, result.losses
    from diffusers import PixArtTransformer2DModel
    from safetensors.torch import load_file

    weights = home / "output" / "pytorch_lora_weights.safetensors"
    state = load_file(str(weights))
    assert state and all(k.startswith("transformer.") and (".lora_A." in k or ".lora_B." in k) for k in state)
    assert not (home / "output" / "transformer").exists()  # base weights are not re-exported
    import torch

    base = PixArtTransformer2DModel.from_pretrained(str(tiny_pixart_dir), subfolder="transformer")
    tuned = PixArtTransformer2DModel.from_pretrained(str(tiny_pixart_dir), subfolder="transformer")
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    inject_adapter_in_model(LoraConfig(r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                            tuned, adapter_name="default")
    set_peft_model_state_dict(tuned, {k.removeprefix("transformer."): v for k, v in state.items()},
                              adapter_name="default")
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1))
    kwargs = {"encoder_hidden_states": text, "timestep": torch.tensor([500]),
              "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
    with torch.no_grad():
        assert not torch.allclose(base(x, **kwargs).sample, tuned(x, **kwargs).sample)


def test_lora_leaves_base_weights_unchanged(tiny_pixart_dir: Path, tiny_cfg: Any, home: Path) -> None:
    import torch

    from simpletuner_pixart.trainer import PixArtSigmaTrainer

    cfg = validate(tiny_cfg(model_type="lora", lora_rank=4, learning_rate=1e-2))
    registry = get_registry()
    trainer = PixArtSigmaTrainer(cfg, registry.family("pixart"), home)
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    model = trainer.trainable()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = registry.adapters.get("standard").apply(model, cfg, trainer.lora_targets)
    assert adapter.params and all(p.requires_grad for p in adapter.params)
    opt = torch.optim.AdamW(adapter.params, lr=1e-2)
    latents = torch.randn(2, 4, 8, 8)
    text = trainer.encode_prompts(["a red square", "a blue circle"])
    for _ in range(3):
        trainer.loss(model, latents, text).backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    base_keys = [k for k in after if "lora_" not in k]
    for key in base_keys:
        original = key.replace(".base_layer", "")
        assert torch.equal(after[key], before[original]), key
    assert any(not torch.equal(after[k], torch.zeros_like(after[k])) for k in after if "lora_B" in k)


def test_v_prediction_trains(home: Path, tiny_cfg: Any) -> None:
    """Learns under v; that the loss target really is v: test_key_effects.py."""
    code, result, _ = train(tiny_cfg(prediction_type="v_prediction", max_train_steps=30), home)
    assert code == 0 and dropped(result.losses, 6) > 1.2


def test_validation_events_carry_decodable_pngs(home: Path, tiny_cfg: Any) -> None:
    raw = tiny_cfg(max_train_steps=10, validation_prompt="a red square", validation_steps=5,
                   validation_num_inference_steps=2, validation_resolution="64x64",
                   validation_disable_unconditional=True)
    code, _, events = train(raw, home)
    assert code == 0
    images = of_type(events, "validation.image")
    assert [e.data["step"] for e in images] == [5, 10]
    assert images[-1].data["validation_type"] == "final"
    src = images[0].data["images"][0]["src"]
    assert src.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert png.size == (64, 64)
    assert Path(images[0].data["path"]).exists()


def test_checkpoints_retention_and_manifest(home: Path, tiny_cfg: Any) -> None:
    from simpletuner_core.training.checkpoint import list_checkpoints, read_manifest, resolve_resume

    code, _, events = train(tiny_cfg(max_train_steps=20, checkpoint_step_interval=5, checkpoints_total_limit=2), home)
    assert code == 0
    assert [e.data["step"] for e in of_type(events, "checkpoint.saved")] == [5, 10, 15]
    kept = list_checkpoints(home / "output")
    assert [step for step, _ in kept] == [10, 15]
    manifest = read_manifest(kept[-1][1])
    assert manifest["step"] == 15 and manifest["seed"] == 7 and manifest["config"]["learning_rate"] == 1e-3
    # an incomplete (manifest-less) newer checkpoint is never "latest"
    (home / "output" / "checkpoint-99").mkdir()
    assert resolve_resume("latest", home / "output") == kept[-1][1]


def test_resume_with_changed_config_is_refused_with_a_diff(home: Path, tiny_cfg: Any) -> None:
    assert train(tiny_cfg(max_train_steps=10, checkpoint_step_interval=5), home)[0] == 0
    raw = tiny_cfg(max_train_steps=20, checkpoint_step_interval=5, resume_from_checkpoint="latest", learning_rate=5e-4)
    code, _ = run_job(validate(raw), home, get_registry(), job_id="again")
    assert code == 2
    failed = of_type(read_events(home / "jobs" / "again" / "events.jsonl"), "job.failed")
    assert "learning_rate: checkpoint=0.001 now=0.0005" in failed[0].data["reason"]


def _forget_keys(checkpoint: Path, keys: set[str]) -> None:
    """Make the checkpoint look written before ``keys`` existed (an older release, a plugin not yet installed)."""
    import json

    path = checkpoint / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"] = {k: v for k, v in manifest["config"].items() if k not in keys}
    manifest["config_hash"] = "0" * 16  # the old hash covered other keys
    path.write_text(json.dumps(manifest))


def test_resume_does_not_depend_on_other_families_plugins_or_new_keys_at_default(home: Path,
                                                                                 tiny_cfg: Any) -> None:
    from simpletuner_core.training.checkpoint import list_checkpoints

    registry = get_registry()
    foreign = {f.name for f in registry.config_fields.values() if f.family and f.family != "pixart_sigma"}
    if not foreign:
        pytest.skip("needs another family's plugin installed")
    assert train(tiny_cfg(max_train_steps=10, checkpoint_step_interval=5), home)[0] == 0
    _forget_keys(list_checkpoints(home / "output")[-1][1], foreign | {"clip_skip"})
    raw = tiny_cfg(max_train_steps=15, checkpoint_step_interval=5, resume_from_checkpoint="latest")
    code, result = run_job(validate(raw), home, get_registry(), job_id="later")
    assert code == 0 and result.global_step == 15
    # a key the checkpoint lacks but that is now set to something else is still a change
    _forget_keys(list_checkpoints(home / "output")[-1][1], {"noise_offset"})
    raw = tiny_cfg(max_train_steps=20, resume_from_checkpoint="latest", noise_offset=0.1)
    code, _ = run_job(validate(raw), home, get_registry(), job_id="changed")
    assert code == 2
    reason = of_type(read_events(home / "jobs" / "changed" / "events.jsonl"), "job.failed")[0].data["reason"]
    assert "noise_offset: checkpoint=None now=0.1" in reason
    assert not any(name in reason for name in foreign | {"clip_skip"}), reason


@pytest.mark.parametrize("optimizer", ["adamw", "adamw_bf16", "optimi-adamw", "optimi-lion", "prodigy"])
def test_each_optimizer_trains(home: Path, tiny_cfg: Any, optimizer: str) -> None:
    lr = {"prodigy": 1.0, "optimi-lion": 3e-4}.get(optimizer, 1e-3)
    code, result, _ = train(tiny_cfg(optimizer=optimizer, learning_rate=lr, max_train_steps=12), home)
    assert code == 0 and all(loss == loss for loss in result.losses)
    assert statistics.fmean(result.losses[-4:]) < statistics.fmean(result.losses[:4])


@pytest.mark.parametrize("schedule", ["constant", "constant_with_warmup", "linear", "cosine",
                                      "cosine_with_restarts", "polynomial"])
def test_schedules_shape_the_learning_rate(home: Path, tiny_cfg: Any, schedule: str) -> None:
    code, _, events = train(tiny_cfg(lr_scheduler=schedule, lr_warmup_steps=4, max_train_steps=12), home)
    assert code == 0
    lrs = [e.data["lr"] for e in of_type(events, "training.status")]
    if schedule == "constant":
        assert len(set(lrs)) == 1
    else:
        assert lrs[0] < lrs[3]  # warming up
    if schedule in ("linear", "cosine", "polynomial"):
        assert lrs[-1] < max(lrs)


def test_epochs_gradient_accumulation_and_ema(home: Path, tiny_cfg: Any, tiny_pixart_dir: Path) -> None:
    raw = tiny_cfg(max_train_steps=0, num_train_epochs=2, train_batch_size=2, gradient_accumulation_steps=2,
                   use_ema=True, ema_decay=0.9)
    code, result, events = train(raw, home)
    assert code == 0
    # 12 images, one 64x64 bucket: 6 micro-batches of 2 → 3 optimizer steps per epoch
    assert result.global_step == 6
    assert {e.data["epoch"] for e in of_type(events, "training.status")} == {1, 2}
    from diffusers import PixArtTransformer2DModel

    main = PixArtTransformer2DModel.from_pretrained(str(home / "output"), subfolder="transformer")
    ema = PixArtTransformer2DModel.from_pretrained(str(home / "output" / "ema"), subfolder="transformer")
    start = PixArtTransformer2DModel.from_pretrained(str(tiny_pixart_dir), subfolder="transformer")
    import torch

    pairs = list(zip(main.parameters(), ema.parameters(), start.parameters(), strict=True))
    assert any(not torch.equal(m, e) for m, e, _ in pairs)  # EMA is not the trained weights...
    assert any(not torch.equal(e, s) for _, e, s in pairs)  # ...nor the starting weights: it was updated
    # and it lags behind: closer to the start than the trained weights are
    assert sum(float((e - s).norm()) for _, e, s in pairs) < sum(float((m - s).norm()) for m, _, s in pairs)


def test_preflight_rejection_names_the_knob(home: Path, tiny_cfg: Any) -> None:
    code, result, events = train(tiny_cfg(train_batch_size=16), home)
    assert code == 2 and result is None
    reason = of_type(events, "job.failed")[0].data["reason"]
    assert "--train_batch_size" in reason
    assert not of_type(events, "training.status")


def test_disable_bucket_pruning_trains_a_bucket_smaller_than_a_batch(home: Path, tiny_cfg: Any) -> None:
    # the 12 images cannot fill a batch of 16 (refused above); with pruning off they form one padded batch
    raw = tiny_cfg(train_batch_size=16, max_train_steps=0, num_train_epochs=2, disable_bucket_pruning=True)
    code, result, events = train(raw, home)
    assert code == 0 and result.status == "completed" and result.global_step == 2
    [plan] = of_type(events, "job.plan")
    assert plan.data["plan"]["micro_batches_per_epoch"] == 1 and not plan.data["plan"]["filtered"]


def test_unreachable_hub_id_says_what_to_do(home: Path, tiny_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = tiny_cfg(pretrained_model_name_or_path="example-org/not-cached-pixart", max_train_steps=2)
    code, _, events = train(raw, home)
    assert code == 1
    reason = of_type(events, "job.failed")[0].data["reason"]
    assert "huggingface-cli download example-org/not-cached-pixart" in reason
    assert "local diffusers directory" in reason


def test_incomplete_local_directory_is_named(home: Path, tiny_cfg: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    (broken / "transformer").mkdir(parents=True)
    code, _, events = train(tiny_cfg(pretrained_model_name_or_path=str(broken), max_train_steps=2), home)
    assert code == 1
    assert "is not a complete diffusers directory" in of_type(events, "job.failed")[0].data["reason"]


def test_tiny_flavour_builds_offline_into_the_state_dir(home: Path, tiny_cfg: Any) -> None:
    raw = tiny_cfg(max_train_steps=2)
    del raw["--pretrained_model_name_or_path"]
    code, _, _ = train(raw, home)
    assert code == 0
    assert (home / "cache" / "models" / "pixart-sigma-tiny-v1" / "model_index.json").exists()


def test_config_rules_reach_the_trainer(home: Path, tiny_cfg: Any) -> None:
    with pytest.raises(ConfigInvalid) as info:
        validate(tiny_cfg(clip_skip=2))
    assert info.value.errors[0].path == "clip_skip"


@pytest.mark.gpu
def test_bf16_mixed_precision_on_cuda(home: Path, tiny_cfg: Any) -> None:
    code, result, _ = train(tiny_cfg(mixed_precision="bf16", max_train_steps=30), home)
    assert code == 0 and dropped(result.losses, 6) > 1.2


def test_tensorboard_tracker_writes_event_files(home: Path, tiny_cfg: Any) -> None:
    code, _, _ = train(tiny_cfg(max_train_steps=4, report_to="tensorboard"), home)
    assert code == 0
    assert list((home / "output" / "logs").rglob("events.out.tfevents.*"))


def test_lycoris_adapter_trains_and_exports(home: Path, tiny_cfg: Any, tmp_path: Path) -> None:
    import json

    lycoris = tmp_path / "lycoris.json"
    lycoris.write_text(json.dumps({"algo": "locon", "linear_dim": 4, "linear_alpha": 1}))
    code, result, _ = train(tiny_cfg(model_type="lora", lora_type="lycoris", lycoris_config=str(lycoris),
                                     learning_rate=1e-2, max_train_steps=30), home)
    assert code == 0 and dropped(result.losses, 6) > 1.2
    from safetensors import safe_open

    with safe_open(str(home / "output" / "pytorch_lycoris_weights.safetensors"), "pt") as fh:
        assert fh.keys() and '"algo": "locon"' in fh.metadata()["adapter"]


def test_prefetch_and_gradient_checkpointing_do_not_change_the_numbers(home: Path, tiny_cfg: Any,
                                                                       tmp_path: Path) -> None:
    """Same losses; that checkpointing recomputes in backward (and only when on): test_key_effects.py."""
    _, plain, _ = train(tiny_cfg(max_train_steps=8), home)
    other = tmp_path / "other"
    other.mkdir()
    raw = tiny_cfg(max_train_steps=8, dataloader_prefetch=True, gradient_checkpointing=True,
                   output_dir=str(other / "out"))
    code, tuned = run_job(validate(raw), other, get_registry(), job_id="j2")
    assert code == 0
    assert tuned.losses == pytest.approx(plain.losses, rel=1e-5)


def test_a_missing_tracker_package_warns_once_and_the_run_completes(home: Path, tiny_cfg: Any) -> None:
    import importlib.util

    from simpletuner_core.config import warnings_for

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    cfg = validate(tiny_cfg(max_train_steps=2, report_to="wandb"))  # valid: missing trackers only warn
    assert any("pip install wandb" in note for note in warnings_for(cfg))
    code, result = run_job(cfg, home, get_registry(), job_id="job")
    assert code == 0 and result.status == "completed" and result.global_step == 2
    events = read_events(home / "jobs" / "job" / "events.jsonl")
    notes = [e for e in of_type(events, "log") if "continuing without" in e.data["message"]]
    assert len(notes) == 1 and notes[0].level == "warning"
    assert "`wandb` package is not installed" in notes[0].data["message"]
    assert events[-1].type == "job.completed"


def test_a_tracker_that_fails_to_start_is_dropped_and_the_run_completes(home: Path, tiny_cfg: Any) -> None:
    """tensorboard is installed; a logging directory that cannot be created makes it fail at start."""
    output = home / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "logs").write_text("a file where tensorboard wants its directory")
    code, result, events = train(tiny_cfg(max_train_steps=2, report_to="tensorboard"), home)
    assert code == 0 and result.status == "completed"
    notes = [e for e in of_type(events, "log") if "continuing without" in e.data["message"]]
    assert len(notes) == 1 and notes[0].level == "warning"
    assert "could not start the tracker" in notes[0].data["message"]


def test_bf16_frozen_parts_with_fp32_training_validate(home: Path, tiny_cfg: Any) -> None:
    raw = tiny_cfg(max_train_steps=4, base_model_precision="bf16", validation_prompt="a red square",
                   validation_num_inference_steps=2)
    code, result, events = train(raw, home)
    assert code == 0 and of_type(events, "validation.image")
    assert all(loss == loss for loss in result.losses)


def test_commands_apply_after_the_next_gradient_sync(home: Path, tiny_cfg: Any) -> None:
    from simpletuner_core.events import EventEmitter, JsonlEventLog
    from simpletuner_core.training.control import Control
    from simpletuner_core.training.engine import Trainer

    raw = tiny_cfg(max_train_steps=6, gradient_accumulation_steps=2, train_batch_size=2,
                   validation_prompt="a red square", validation_steps=0, validation_num_inference_steps=2)
    control = Control(validate=True, checkpoint=True)
    log = JsonlEventLog(home / "events.jsonl")
    result = Trainer(validate(raw), job_id="c", home=home, emitter=EventEmitter("c", log),
                     control=control).run()
    log.close()
    events = read_events(home / "events.jsonl")
    assert result.status == "completed"
    assert [e.data["step"] for e in of_type(events, "checkpoint.saved")] == [1]  # one-shot, after step 1
    assert [e.data["step"] for e in of_type(events, "validation.started")] == [1, 6]  # forced, then final
    stop = Control(stop=True)
    log = JsonlEventLog(home / "events2.jsonl")
    stopped = Trainer(validate(raw | {"--output_dir": str(home / "out2")}), job_id="d", home=home,
                      emitter=EventEmitter("d", log), control=stop).run()
    log.close()
    assert stopped.status == "stopped" and stopped.global_step == 1
    assert (home / "out2" / "checkpoint-1" / "manifest.json").exists()


def test_resume_refuses_a_changed_dataset(home: Path, tiny_cfg: Any, tmp_path: Path, demo_images: Path) -> None:
    import shutil

    images = tmp_path / "imgs"
    shutil.copytree(demo_images, images)
    raw = tiny_cfg(max_train_steps=6, checkpoint_step_interval=3, train_batch_size=2)
    write_dataloader(home, images)
    assert train(raw, home)[0] == 0
    (images / "extra.png").write_bytes((images / "demo_000.png").read_bytes())
    (images / "extra.txt").write_text("a new caption")
    code, _ = run_job(validate(raw | {"--resume_from_checkpoint": "latest", "--max_train_steps": 9}), home,
                      get_registry(), job_id="again")
    assert code == 2
    reason = of_type(read_events(home / "jobs" / "again" / "events.jsonl"), "job.failed")[0].data["reason"]
    assert "the dataset changed since the checkpoint" in reason


def test_unusable_webhook_config_fails_the_job_with_a_reason(home: Path, tiny_cfg: Any) -> None:
    code, _, events = train(tiny_cfg(max_train_steps=2, webhook_config='[{"webhook_type": "raw", '
                                     '"callback_url": "ftp://example.invalid/x"}]'), home)
    assert code == 2 and of_type(events, "job.failed")[0].data["reason"].startswith("event sinks:")


@pytest.mark.parametrize("precision", ["int8-quanto", "fp8-quanto"])
def test_lora_on_a_quantized_base_trains_checkpoints_and_resumes_exactly(home: Path, tiny_cfg: Any,
                                                                          tmp_path: Path, precision: str) -> None:
    import shutil

    raw = tiny_cfg(model_type="lora", lora_rank=4, learning_rate=1e-2, max_train_steps=12,
                   base_model_precision=precision, checkpoint_step_interval=5)
    code, straight, events = train(raw, home)
    assert code == 0 and dropped(straight.losses, 4) > 1.1
    assert any(e.data["message"] == f"quantizing the base weights to {precision}" for e in of_type(events, "log"))
    assert [e.data["status"] for e in of_type(events, "job.stage")
            if e.data["stage"] == "init_prepare_models"] == ["running", "completed"]
    # resume from checkpoint-5 in a copy of the output: steps 6..12 must match the straight run exactly
    other = tmp_path / "resumed"
    shutil.copytree(home / "output" / "checkpoint-5", other / "checkpoint-5")
    again = raw | {"--output_dir": str(other), "--resume_from_checkpoint": "latest"}
    code, resumed = run_job(validate(again), home, get_registry(), job_id="resumed")
    assert code == 0 and resumed.losses == straight.losses[5:]


def test_quantized_base_needs_an_adapter(tiny_cfg: Any) -> None:
    with pytest.raises(ConfigInvalid, match="train an adapter on it with model_type=lora"):
        validate(tiny_cfg(base_model_precision="int8-quanto"))


def _png(event: Any) -> Image.Image:
    src = event.data["images"][0]["src"]
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def test_validation_previews_decode_intermediate_latents(home: Path, tiny_cfg: Any, tiny_taesd_dir: Path) -> None:
    raw = tiny_cfg(max_train_steps=4, validation_prompt="a red square on a blue background", validation_steps=4,
                   validation_num_inference_steps=5, validation_resolution="64x64", validation_preview=True,
                   validation_preview_steps=2, validation_preview_decoder=str(tiny_taesd_dir))
    code, _, events = train(raw, home)
    assert code == 0
    images = of_type(events, "validation.image")
    previews = [e for e in images if e.data["validation_type"] == "intermediary"]
    assert [e.data["step"] for e in previews] == [1, 3, 5]
    assert [e.data["step_label"] for e in previews] == ["1/5", "3/5", "5/5"]
    timesteps = [e.data["timestep"] for e in previews]
    assert all(isinstance(t, float) for t in timesteps) and timesteps == sorted(timesteps, reverse=True)
    first = previews[0].data
    assert first["title"] == "Validation (step 1/5): a red square on a blue background"
    assert first["body"] == first["prompt"] == "a red square on a blue background"
    assert first["resolution"] == [64, 64] and first["global_step"] == 4
    assert all(_png(e).size == (64, 64) for e in previews)
    from simpletuner_core.events.types import EVENT_TYPES

    assert all(set(EVENT_TYPES["validation.image"]) <= set(e.data) for e in images)
    final = images[-1]
    assert final.data["validation_type"] == "final" and final.id > previews[-1].id
    assert _png(final).size == (64, 64)


def test_a_broken_preview_decoder_turns_previews_off_not_the_run(home: Path, tiny_cfg: Any) -> None:
    raw = tiny_cfg(max_train_steps=2, validation_prompt="a red square", validation_steps=2,
                   validation_num_inference_steps=2, validation_resolution="64x64", validation_preview=True,
                   validation_preview_decoder=str(home / "no-such-decoder"), validation_disable_unconditional=True)
    code, _, events = train(raw, home)
    assert code == 0
    assert [e.data["validation_type"] for e in of_type(events, "validation.image")] == ["final"]
    warnings = [e.data["message"] for e in of_type(events, "log") if e.level == "warning"]
    assert sum("validation previews are off" in w for w in warnings) == 1


def test_tensorboard_tracker_and_loss_plot(home: Path, tiny_cfg: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, result, _ = train(tiny_cfg(max_train_steps=6, report_to="tensorboard", tracker_project_name="toyproj"),
                            home)
    assert code == 0
    runs = list((home / "output" / "logs").rglob("events.out.tfevents.*"))
    assert runs, list((home / "output").rglob("*"))
    acc = EventAccumulator(str(runs[0].parent))
    acc.Reload()
    losses = acc.Scalars("train_loss")
    assert [s.step for s in losses] == list(range(1, 7))
    assert [round(s.value, 5) for s in losses] == [round(v, 5) for v in result.losses]
    plot = home / "output" / "training-plot.png"
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (640, 360)
