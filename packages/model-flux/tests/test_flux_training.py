"""Real training on the tiny Flux model: LoRA, LyCORIS and quantized bases learn, export and resume."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import validate
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flux_helpers import flux_config, image_dataloader, train, transformer_inputs


def dropped(losses: list[float], window: int = 6) -> float:
    return statistics.fmean(losses[:window]) / statistics.fmean(losses[-window:])


@pytest.fixture
def cfg(home: Path, tiny_flux_dir: Path, demo_images: Path) -> Any:
    def make(**overrides: Any) -> dict[str, Any]:
        return flux_config(home, tiny_flux_dir, image_dataloader(home, demo_images), **overrides)

    return make


def test_lora_learns_and_loads_in_diffusers_with_identical_outputs(home: Path, cfg: Any, tiny_flux_dir: Path) -> None:
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    code, result, _ = train(cfg(lora_alpha=8, max_train_steps=30), home)
    assert code == 0 and dropped(result.losses) > 1.1, result.losses
    weights = home / "output" / "pytorch_lora_weights.safetensors"
    state = load_file(str(weights))
    assert all(k.startswith("transformer.") for k in state)

    pipe = FluxPipeline.from_pretrained(str(tiny_flux_dir))
    pipe.set_progress_bar_config(disable=True)
    render = {"prompt": "a red square", "num_inference_steps": 2, "height": 64, "width": 64,
              "max_sequence_length": 16, "output_type": "pt"}
    before = pipe(**render, generator=torch.Generator().manual_seed(0)).images
    pipe.load_lora_weights(str(weights), adapter_name="tuned")
    after = pipe(**render, generator=torch.Generator().manual_seed(0)).images
    assert not torch.allclose(before, after)

    ours = FluxTransformer2DModel.from_pretrained(str(tiny_flux_dir), subfolder="transformer")
    targets = json.loads(_metadata(weights)["adapter"])["target_modules"]
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=targets), ours)
    set_peft_model_state_dict(ours, {k.removeprefix("transformer."): v for k, v in state.items()})
    inputs = transformer_inputs()
    with torch.no_grad():
        assert torch.allclose(ours(**inputs).sample, pipe.transformer(**inputs).sample, atol=1e-6)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata())


@pytest.mark.parametrize(("lora_type", "settings", "precision"), [
    ("standard", None, "no_change"),
    ("lycoris", {"algo": "lokr", "factor": 4}, "no_change"),
    ("lycoris", {"algo": "locon", "linear_dim": 4}, "no_change"),
    ("lycoris", {"algo": "loha", "linear_dim": 4}, "no_change"),
    ("standard", None, "int8-quanto"),
    ("lycoris", {"algo": "lokr", "factor": 4}, "fp8-quanto"),
])
def test_only_adapter_weights_change(home: Path, cfg: Any, tmp_path: Path, lora_type: str,
                                     settings: dict[str, Any] | None, precision: str) -> None:
    import torch

    from simpletuner_flux.trainer import FluxTrainer

    extra: dict[str, Any] = {"lora_type": lora_type, "base_model_precision": precision}
    if settings:
        (tmp_path / "lycoris.json").write_text(json.dumps(settings))
        extra["lycoris_config"] = str(tmp_path / "lycoris.json")
    config = validate(cfg(**extra))
    registry = get_registry()
    trainer = FluxTrainer(config, registry.family("flux"), home)
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    model = trainer.trainable()
    if precision != "no_change":
        registry.quantizers.get(precision).quantize(model, config, exclude=trainer.quantize_exclude)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = registry.adapters.get(lora_type).apply(model, config, trainer.lora_targets, trainer.lycoris_presets)
    adapter_ids = {id(p) for p in adapter.params}
    assert not [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in adapter_ids]
    opt = torch.optim.AdamW(adapter.params, lr=1e-2)
    latents = torch.randn(2, 4, 8, 8)
    text = trainer.encode_prompts(["a red square", "a blue circle"])
    start = [p.detach().clone() for p in adapter.params]
    for _ in range(3):
        trainer.loss(model, latents, text).backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    missing = []
    for key, value in before.items():  # peft moves a wrapped module's tensors under <module>.base_layer.<rest>
        now = after.get(key)
        if now is None:
            parts = key.split(".")
            wrapped = (".".join([*parts[:i], "base_layer", *parts[i:]]) for i in range(len(parts) - 1, 0, -1))
            now = next((after[k] for k in wrapped if k in after), None)
        if now is None:
            missing.append(key)
            continue
        assert torch.equal(now, value), key
    assert not missing, missing[:5]  # every frozen tensor (biases, quanto's scales too) was compared
    assert any(not torch.equal(a, b) for a, b in zip(adapter.params, start, strict=True))


@pytest.mark.parametrize(("algo", "extra"), [
    ("lokr", {"factor": 4}), ("locon", {"linear_dim": 4}), ("loha", {"linear_dim": 4}),
])
def test_lycoris_algorithms_learn(home: Path, cfg: Any, tmp_path: Path, algo: str, extra: dict[str, Any]) -> None:
    from safetensors import safe_open

    settings = tmp_path / "lycoris.json"
    settings.write_text(json.dumps({"algo": algo, **extra, "apply_preset": "attention"}))
    more = {"flux_sigma_sampling": "shifted"} if algo == "loha" else {}
    code, result, _ = train(cfg(lora_type="lycoris", lycoris_config=str(settings), max_train_steps=30, **more),
                            home)
    assert code == 0 and dropped(result.losses) > 1.05, result.losses
    with safe_open(str(home / "output" / "pytorch_lycoris_weights.safetensors"), "pt") as fh:
        meta = fh.metadata()
        assert meta["format"] == "lycoris" and json.loads(meta["adapter"])["algo"] == algo
        assert all(k.startswith("lycoris_") for k in fh.keys())


@pytest.mark.parametrize(("precision", "via"), [("int8-quanto", "accelerator"), ("fp8-quanto", "cpu")])
def test_lora_on_a_quantized_base_learns_and_checkpoints(home: Path, cfg: Any, precision: str, via: str) -> None:
    code, result, events = train(cfg(base_model_precision=precision, quantize_via=via, max_train_steps=30,
                                     checkpointing_steps=10), home)
    assert code == 0 and dropped(result.losses) > 1.05, result.losses
    assert [e.data["step"] for e in events if e.type == "checkpoint.saved"] == [10, 20]
    assert (home / "output" / "checkpoint-20" / "manifest.json").exists()


def test_lycoris_resume_is_exact_and_a_changed_adapter_is_refused_first(home: Path, cfg: Any,
                                                                        tmp_path: Path) -> None:
    settings = tmp_path / "lycoris.json"
    settings.write_text(json.dumps({"algo": "lokr", "factor": 4}))
    raw = cfg(lora_type="lycoris", lycoris_config=str(settings), max_train_steps=12, checkpointing_steps=5,
              train_batch_size=2, optimizer="optimi-lion", learning_rate=1e-3)
    code, straight, _ = train(raw, home)
    assert code == 0
    other = tmp_path / "resumed"
    shutil.copytree(home / "output" / "checkpoint-5", other / "checkpoint-5")
    again = raw | {"--output_dir": str(other), "--resume_from_checkpoint": "latest"}
    code, resumed, _ = train(again, home, job_id="resumed")
    assert code == 0 and resumed.losses == straight.losses[5:]

    settings.write_text(json.dumps({"algo": "lokr", "factor": 8}))  # same path, different adapter
    code, _, events = train(again, home, job_id="changed")
    assert code == 2
    reason = next(e for e in events if e.type == "job.failed").data["reason"]
    assert "adapter.factor: checkpoint=4 now=8" in reason
    assert not any(e.type == "job.stage" and e.data["stage"] == "init_load_base_model" for e in events)


def test_full_finetune_saves_a_flux_pipeline(home: Path, cfg: Any) -> None:
    from diffusers import FluxPipeline

    code, result, _ = train(cfg(model_type="full", lora_rank=16, max_train_steps=4, learning_rate=1e-3), home)
    assert code == 0 and result.global_step == 4
    pipe = FluxPipeline.from_pretrained(str(home / "output"))
    assert pipe.transformer.config.guidance_embeds


def test_clip_skip_changes_the_pooled_text_and_is_bounded(home: Path, cfg: Any) -> None:
    import torch

    from simpletuner_core.training.loading import ModelLoadError
    from simpletuner_flux.trainer import FluxTrainer

    family = get_registry().family("flux")
    pooled = []
    for skip in (0, 2):
        trainer = FluxTrainer(validate(cfg(clip_skip=skip)), family, home)
        trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
        pooled.append(trainer.encode_prompts(["a red square"])["pooled_prompt_embeds"])
        assert (f"skip{skip}" in trainer.encoder_id("text"))  # text caches are keyed by clip_skip
    assert not torch.allclose(*pooled)
    trainer = FluxTrainer(validate(cfg(clip_skip=3)), family, home)
    with pytest.raises(ModelLoadError, match="has 3 layers; use at most 2"):
        trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)


def test_lycoris_preset_is_set_for_every_network(home: Path, cfg: Any, tmp_path: Path) -> None:
    """LyCORIS keeps the preset as class-level state: each network must get its own, never the last one's."""
    from diffusers import FluxTransformer2DModel

    from simpletuner_flux.trainer import FluxTrainer

    registry = get_registry()
    counts = []
    for preset in ("attention", "default", "attention"):
        (tmp_path / "l.json").write_text(json.dumps({"algo": "locon", "linear_dim": 2, "apply_preset": preset}))
        config = validate(cfg(lora_type="lycoris", lycoris_config=str(tmp_path / "l.json")))
        model = FluxTransformer2DModel.from_pretrained(str(cfg()["--pretrained_model_name_or_path"]),
                                                       subfolder="transformer")
        handle = registry.adapters.get("lycoris").apply(model, config, FluxTrainer.lora_targets,
                                                        FluxTrainer.lycoris_presets)
        counts.append(len(handle.checkpoint_module.loras))
        assert handle.hyperparameters["preset"] == FluxTrainer.lycoris_presets[preset]
    assert counts[0] == counts[2] == 14 and counts[1] > 14, counts


@pytest.mark.parametrize(("extra", "key", "message"), [
    ({"lora_target_modules": "no_such_module"}, "lora_target_modules", "no_such_module"),
    ({"lora_type": "lycoris", "lycoris_config": "PRESET"}, "lycoris_config", "unknown LyCORIS preset 'nope'"),
])
def test_adapter_mistakes_fail_as_config_errors(home: Path, cfg: Any, tmp_path: Path, extra: dict[str, Any],
                                               key: str, message: str) -> None:
    """Mistakes only the applied adapter finds (targets that match nothing, a preset name changed after
    validation) end the job as a config error (exit 2) naming the key, not a crash (exit 1)."""
    if extra.get("lycoris_config") == "PRESET":
        settings = tmp_path / "lycoris.json"
        settings.write_text(json.dumps({"algo": "lokr", "factor": 4, "apply_preset": "attention"}))
        extra = {**extra, "lycoris_config": str(settings)}
        config = validate(cfg(max_train_steps=2, **extra))
        settings.write_text(json.dumps({"algo": "lokr", "factor": 4, "apply_preset": "nope"}))
    else:
        config = validate(cfg(max_train_steps=2, **extra))
    code, _ = run_job(config, home, get_registry(), job_id="bad")
    assert code == 2
    failed = [e for e in read_events(home / "jobs" / "bad" / "events.jsonl") if e.type == "job.failed"]
    assert key in failed[0].data["reason"] and message in failed[0].data["reason"], failed[0].data
