"""Flux training knobs: TREAD routing, fused QKV, attention_mechanism and flux_lora_target presets."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config import ConfigInvalid, validate, warnings_for
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flux_helpers import flux_config, image_dataloader, train, transformer_inputs

ROUTE = {"routes": [{"selection_ratio": 0.5, "start_layer_idx": 1, "end_layer_idx": -1}]}


@pytest.fixture
def cfg(home: Path, tiny_flux_dir: Path, demo_images: Path) -> Any:
    def make(**overrides: Any) -> dict[str, Any]:
        return flux_config(home, tiny_flux_dir, image_dataloader(home, demo_images), **overrides)

    return make


def loaded(raw: dict[str, Any], home: Path) -> Any:
    import torch

    from simpletuner_flux.trainer import FluxTrainer

    trainer = FluxTrainer(validate(raw), get_registry().family("flux"), home)
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    return trainer


def _token_counts(model: Any) -> tuple[list[int], Any]:
    """Image tokens each block receives, per call (forward pre-hooks on every block)."""
    seen: list[int] = []

    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs["hidden_states"].shape[1])

    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    handles = [b.register_forward_pre_hook(hook, with_kwargs=True) for b in blocks]
    return seen, handles


# -- TREAD ------------------------------------------------------------------------------------------------------

def test_tread_routes_only_training_calls_through_fewer_tokens(home: Path, cfg: Any) -> None:
    import torch

    trainer = loaded(cfg(tread_config=json.dumps(ROUTE)), home)
    model = trainer.trainable()
    assert trainer.tread_spans == [(0.5, 1, 2)]  # 1 dual + 2 single blocks; -1 is the last
    latents = torch.randn(2, 4, 8, 8)  # 4×4 packed = 16 image tokens
    text = trainer.encode_prompts(["a red square", "a blue circle"])
    seen, handles = _token_counts(model)
    model.train()
    torch.manual_seed(0)
    loss = trainer.loss(model, latents, text)
    assert seen == [16, 8, 8] and torch.isfinite(loss)
    loss.backward()  # gather/scatter keep the graph: the routed blocks get gradients
    assert model.single_transformer_blocks[1].proj_out.weight.grad is not None
    seen.clear()
    with torch.no_grad():  # eval-style calls (no grad) and validation never route
        trainer.loss(model, latents, text)
    model.eval()
    trainer.loss(model, latents, text)
    assert seen == [16, 16, 16, 16, 16, 16]
    for h in handles:
        h.remove()


def test_tread_keeps_the_shape_and_unrouted_calls_are_diffusers_own(home: Path, cfg: Any,
                                                                   tiny_flux_dir: Path) -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    from simpletuner_flux import tread

    trainer = loaded(cfg(tread_config=ROUTE), home)
    plain = FluxTransformer2DModel.from_pretrained(str(tiny_flux_dir), subfolder="transformer")
    inputs = transformer_inputs()
    with torch.no_grad():
        ours = trainer.transformer(**inputs).sample
        routed = trainer.transformer(**inputs, tread=tread.Plan(seed=3, routable=16)).sample
        assert torch.equal(ours, plain(**inputs).sample)
    assert routed.shape == ours.shape and not torch.allclose(routed, ours)


def test_tread_matches_a_per_sample_reference(tiny_flux_dir: Path) -> None:
    """Each sample keeps its own tokens: the batched routed forward equals running every sample alone through
    the routed blocks with plain (S, D) rotary tables, dropped tokens left as they were."""
    import torch
    from diffusers import FluxTransformer2DModel

    from simpletuner_flux import tread
    from simpletuner_flux.packing import latent_ids

    model = FluxTransformer2DModel.from_pretrained(str(tiny_flux_dir), subfolder="transformer")
    tread.install(model, [(0.5, 1, 1)])
    g = torch.Generator().manual_seed(0)
    batch = 3
    inputs = {"hidden_states": torch.randn(batch, 16, 16, generator=g), "timestep": torch.rand(batch, generator=g),
              "guidance": torch.ones(batch), "pooled_projections": torch.randn(batch, 32, generator=g),
              "encoder_hidden_states": torch.randn(batch, 8, 32, generator=g), "txt_ids": torch.zeros(8, 3),
              "img_ids": latent_ids(4, 4)}
    with torch.no_grad():
        routed = model(**inputs, tread=tread.Plan(seed=11, routable=16)).sample
        scores = torch.rand(batch, 16, generator=torch.Generator().manual_seed(11))
        keep = scores.argsort(dim=1)[:, :8].sort(dim=1).values
        cos, sin = model.pos_embed(torch.cat([inputs["txt_ids"], inputs["img_ids"]]))
        blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
        for b in range(batch):
            x = model.x_embedder(inputs["hidden_states"][b:b + 1])
            temb = model.time_text_embed(inputs["timestep"][b:b + 1] * 1000, inputs["guidance"][b:b + 1] * 1000,
                                         inputs["pooled_projections"][b:b + 1])
            txt = model.context_embedder(inputs["encoder_hidden_states"][b:b + 1])
            for i, block in enumerate(blocks):
                if i == 1:
                    rows = torch.cat([torch.arange(8), 8 + keep[b]])
                    before = x
                    txt, part = block(hidden_states=x[:, keep[b]], encoder_hidden_states=txt, temb=temb,
                                      image_rotary_emb=(cos[rows], sin[rows]))
                    x = before.clone()
                    x[:, keep[b]] = part
                else:
                    txt, x = block(hidden_states=x, encoder_hidden_states=txt, temb=temb,
                                   image_rotary_emb=(cos, sin))
            alone = model.proj_out(model.norm_out(x, temb))
            assert torch.allclose(alone, routed[b:b + 1], atol=1e-5)


def test_tread_lora_learns_and_resumes_exactly(home: Path, cfg: Any, tmp_path: Path) -> None:
    code, result, _ = train(cfg(tread_config=ROUTE, max_train_steps=30), home)
    losses = result.losses
    assert code == 0 and all(map(lambda v: v == v, losses))
    assert statistics.fmean(losses[:6]) / statistics.fmean(losses[-6:]) > 1.1, losses

    raw = cfg(tread_config=ROUTE, max_train_steps=8, checkpointing_steps=4, output_dir=str(tmp_path / "a"))
    code, straight, _ = train(raw, home, job_id="straight")
    assert code == 0
    shutil.copytree(tmp_path / "a" / "checkpoint-4", tmp_path / "b" / "checkpoint-4")
    again = raw | {"--output_dir": str(tmp_path / "b"), "--resume_from_checkpoint": "latest"}
    code, resumed, _ = train(again, home, job_id="resumed")
    assert code == 0 and resumed.losses == straight.losses[4:]


def test_tread_changes_the_loss_only_when_set(home: Path, cfg: Any) -> None:
    """Same seed: noise and sigma are drawn before the routing seed, so only the routed blocks differ."""
    import torch

    latents = torch.randn(2, 4, 8, 8)
    values = []
    for extra in ({}, {"tread_config": None}, {"tread_config": ROUTE}):
        trainer = loaded(cfg(**extra), home)
        trainer.transformer.train()
        text = trainer.encode_prompts(["a red square", "a blue circle"])
        torch.manual_seed(5)
        values.append(float(trainer.loss(trainer.transformer, latents, text)))
    assert values[0] == values[1] != values[2]


@pytest.mark.parametrize(("value", "message"), [
    ("{routes: []}", "not valid JSON"),
    ({"routes": []}, "at least one route"),
    ({"routes": [{"selection_ratio": 0, "start_layer_idx": 0, "end_layer_idx": 1}]}, "in (0, 1)"),
    ({"routes": [{"selection_ratio": 1.5, "start_layer_idx": 0, "end_layer_idx": 1}]}, "in (0, 1)"),
    ({"routes": [{"selection_ratio": 0.5, "start_layer_idx": "2", "end_layer_idx": 1}]}, "start_layer_idx must"),
    ({"routes": [{"selection_ratio": 0.5, "start_layer_idx": 3, "end_layer_idx": 1}]}, "is after end_layer_idx"),
    ({"routes": [{"selection_ratio": 0.5, "start": 0}]}, "unknown key 'start'"),
])
def test_bad_tread_config_is_a_config_error(cfg: Any, value: Any, message: str) -> None:
    with pytest.raises(ConfigInvalid) as err:
        validate(cfg(tread_config=value))
    assert [e.path for e in err.value.errors] == ["tread_config"] and message in err.value.errors[0].message


def test_tread_indices_beyond_the_model_fail_at_load(home: Path, cfg: Any) -> None:
    raw = cfg(tread_config={"routes": [{"selection_ratio": 0.5, "start_layer_idx": 1, "end_layer_idx": 7}]})
    with pytest.raises(ConfigInvalid) as err:
        loaded(raw, home)
    assert err.value.errors[0].path == "tread_config" and "3 transformer blocks" in err.value.errors[0].message


def test_tread_is_refused_for_pixart(home: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    raw = flux_config(home, tiny_pixart_dir, image_dataloader(home, demo_images), tread_config=ROUTE,
                      model_family="pixart_sigma")
    with pytest.raises(ConfigInvalid) as err:
        validate(raw)
    assert any(e.path == "tread_config" and "flux" in e.message for e in err.value.errors)


# -- fused QKV --------------------------------------------------------------------------------------------------

def test_fused_qkv_gives_the_same_output(tiny_flux_dir: Path) -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel.from_pretrained(str(tiny_flux_dir), subfolder="transformer")
    inputs = transformer_inputs()
    with torch.no_grad():
        before = model(**inputs).sample
        model.fuse_qkv_projections()
        after = model(**inputs).sample
    assert hasattr(model.transformer_blocks[0].attn, "to_added_qkv")
    assert hasattr(model.single_transformer_blocks[0].attn, "to_qkv")
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("key", ["fuse_qkv_projections", "fused_qkv_projections"])
def test_fused_full_finetune_trains_and_saves_unfused(home: Path, cfg: Any, tiny_flux_dir: Path, key: str) -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    raw = cfg(model_type="full", lora_rank=16, max_train_steps=4, learning_rate=1e-3, **{key: True})
    assert loaded(raw, home).transformer.transformer_blocks[0].attn.fused_projections
    code, result, events = train(raw, home)
    assert code == 0 and result.global_step == 4
    assert any("fused QKV" in e.data.get("message", "") for e in events if e.type == "log")
    saved = FluxTransformer2DModel.from_pretrained(str(home / "output"), subfolder="transformer")
    start = FluxTransformer2DModel.from_pretrained(str(tiny_flux_dir), subfolder="transformer")
    assert not hasattr(saved.single_transformer_blocks[0].attn, "to_qkv")
    # what trained inside to_qkv reached to_q: the saved projection moved away from the starting weights
    assert not torch.equal(saved.single_transformer_blocks[0].attn.to_q.weight,
                           start.single_transformer_blocks[0].attn.to_q.weight)


def test_unfusing_keeps_the_trained_weights(tiny_flux_dir: Path) -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    from simpletuner_flux.trainer import unfuse_keeping_weights

    model = FluxTransformer2DModel.from_pretrained(str(tiny_flux_dir), subfolder="transformer")
    model.fuse_qkv_projections()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    inputs = transformer_inputs()
    with torch.no_grad():
        fused = model(**inputs).sample
        unfuse_keeping_weights(model)
        assert not model.transformer_blocks[0].attn.fused_projections
        assert torch.allclose(model(**inputs).sample, fused, atol=1e-5)


@pytest.mark.parametrize("key", ["fuse_qkv_projections", "fused_qkv_projections"])
def test_fused_qkv_with_lora_is_refused(cfg: Any, key: str) -> None:
    with pytest.raises(ConfigInvalid) as err:
        validate(cfg(**{key: True}))
    assert err.value.errors[0].path == key and "full fine-tunes only" in err.value.errors[0].message


# -- attention_mechanism ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mechanism", "backend"), [("diffusers", None), ("sdpa", "native")])
def test_attention_mechanism_reaches_the_processors(home: Path, cfg: Any, mechanism: str,
                                                    backend: str | None) -> None:
    trainer = loaded(cfg(attention_mechanism=mechanism), home)
    found = {getattr(p._attention_backend, "value", p._attention_backend)
             for p in trainer.transformer.attn_processors.values()}
    assert found == {backend}


def test_unknown_or_missing_attention_mechanisms_are_refused(cfg: Any) -> None:
    import importlib.util

    with pytest.raises(ConfigInvalid) as err:
        validate(cfg(attention_mechanism="sdpaa"))
    assert err.value.errors[0].path == "attention_mechanism" and err.value.errors[0].did_you_mean == "sdpa"
    if importlib.util.find_spec("xformers") is None:
        with pytest.raises(ConfigInvalid) as err:
            validate(cfg(attention_mechanism="xformers"))
        assert err.value.errors[0].path == "attention_mechanism"
        assert "not installed" in err.value.errors[0].message


# -- flux_lora_target -------------------------------------------------------------------------------------------

ATTN_DUAL = ["transformer_blocks.0.attn." + n for n in
             ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")]
ATTN_SINGLE = [f"single_transformer_blocks.{i}.attn.{n}" for i in (0, 1) for n in ("to_q", "to_k", "to_v")]
CONTEXT = ["transformer_blocks.0.attn." + n for n in ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")]
CONTEXT_FF = ["transformer_blocks.0.ff_context.net.0.proj", "transformer_blocks.0.ff_context.net.2"]
FFS = ["transformer_blocks.0.ff.net.0.proj", "transformer_blocks.0.ff.net.2", *CONTEXT_FF,
       "single_transformer_blocks.0.proj_mlp", "single_transformer_blocks.1.proj_mlp"]
MODULATION = ["transformer_blocks.0.norm1.linear", "transformer_blocks.0.norm1_context.linear",
              "single_transformer_blocks.0.norm.linear", "single_transformer_blocks.1.norm.linear"]
PROJ_OUT = ["single_transformer_blocks.0.proj_out", "single_transformer_blocks.1.proj_out", "proj_out"]
EXPECTED = {
    "all": ATTN_DUAL + ATTN_SINGLE,
    "mmdit": ATTN_DUAL + ATTN_SINGLE,
    "context": CONTEXT,
    "context+ffs": CONTEXT + CONTEXT_FF,
    "all+ffs": ATTN_DUAL + ATTN_SINGLE + FFS,
    "all+ffs+embedder": [*ATTN_DUAL, *ATTN_SINGLE, *FFS, "x_embedder", "context_embedder"],
    "ai-toolkit": ATTN_DUAL + ATTN_SINGLE + FFS + MODULATION + PROJ_OUT,
    "tiny": ["transformer_blocks.0.attn." + n for n in ("to_v", "add_v_proj", "to_out.0", "to_add_out")]
    + [f"single_transformer_blocks.{i}.attn.to_v" for i in (0, 1)],
    "nano": ["transformer_blocks.0.attn.to_out.0", "transformer_blocks.0.attn.to_add_out"],
}


def _wrapped(model: Any) -> set[str]:
    return {name.removesuffix(".lora_A.default") for name, _ in model.named_modules()
            if name.endswith(".lora_A.default")}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_flux_lora_target_presets_select_the_documented_modules(home: Path, cfg: Any, preset: str) -> None:
    from simpletuner_core.training.adapter_setup import apply_adapter, describe_adapter
    from simpletuner_flux.lora_targets import PRESETS

    assert set(PRESETS) == set(EXPECTED)
    registry = get_registry()
    trainer = loaded(cfg(flux_lora_target=preset), home)
    adapter = apply_adapter(trainer.cfg, registry.family("flux"), trainer, trainer.transformer, registry,
                            fresh=True, log=lambda _msg: None)
    assert _wrapped(trainer.transformer) == set(EXPECTED[preset])
    # the resume check derives the same targets from the config alone
    described = describe_adapter(trainer.cfg, registry.family("flux"), registry)
    assert described["target_modules"] == adapter.hyperparameters["target_modules"]


def test_lora_target_modules_wins_over_the_preset_with_a_warning(home: Path, cfg: Any) -> None:
    from simpletuner_core.training.adapter_setup import apply_adapter

    registry = get_registry()
    raw = cfg(flux_lora_target="context", lora_target_modules="to_out.0")
    notes = warnings_for(validate(raw))
    assert any("flux_lora_target=context is ignored" in n for n in notes), notes
    assert not [n for n in warnings_for(validate(cfg(flux_lora_target="context"))) if "flux_lora_target" in n]
    trainer = loaded(raw, home)
    apply_adapter(trainer.cfg, registry.family("flux"), trainer, trainer.transformer, registry, fresh=True,
                  log=lambda _msg: None)
    assert _wrapped(trainer.transformer) == {"transformer_blocks.0.attn.to_out.0"}


def test_unknown_flux_lora_target_is_refused_with_a_suggestion(cfg: Any) -> None:
    with pytest.raises(ConfigInvalid) as err:
        validate(cfg(flux_lora_target="context+ff"))
    error = err.value.errors[0]
    assert error.path == "flux_lora_target" and error.did_you_mean == "context+ffs"


def test_tread_never_drops_kontext_reference_tokens(home: Path, tiny_kontext_dir: Path, demo_images: Path) -> None:
    import torch

    raw = flux_config(home, tiny_kontext_dir, image_dataloader(home, demo_images), flavour="tiny-kontext",
                      tread_config=ROUTE)
    trainer = loaded(raw, home)
    model = trainer.trainable()
    model.train()
    text = trainer.encode_prompts(["make it red", "make it blue"])
    seen, handles = _token_counts(model)
    loss = trainer.loss(model, torch.randn(2, 4, 8, 8), text, conditioning=[torch.randn(2, 4, 8, 8)])
    assert seen == [32, 8 + 16, 8 + 16] and torch.isfinite(loss)  # half of 16 targets + all 16 references
    for h in handles:
        h.remove()
