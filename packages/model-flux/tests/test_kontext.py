"""Kontext edit/reference training: reference latents on the sequence axis, pairing, sampling modes, refusals."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config import validate
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flux_helpers import flux_config, kontext_dataloader, train


def test_kontext_lora_learns_from_pairs_and_validates_an_edit(home: Path, tiny_kontext_dir: Path,
                                                               demo_pairs: Path) -> None:
    raw = flux_config(home, tiny_kontext_dir, kontext_dataloader(home, demo_pairs), "tiny-kontext",
                      max_train_steps=30, validation_prompt="make the square blue", validation_steps=0,
                      validation_num_inference_steps=2, validation_disable_unconditional=True)
    code, result, events = train(raw, home)
    assert code == 0
    losses = result.losses
    assert statistics.fmean(losses[:6]) / statistics.fmean(losses[-6:]) > 1.1, losses
    plan = next(e for e in events if e.type == "job.plan").data["plan"]
    assert len(plan["references"]) == 8 and plan["pairings"][0]["paired"] == 8
    images = [e for e in events if e.type == "validation.image"]
    assert len(images) == 1 and images[0].data["resolution"] == [64, 64]  # the first bucket, not 1024²


def test_reference_latents_enter_the_loss(home: Path, tiny_kontext_dir: Path, tiny_flux_dir: Path,
                                          demo_pairs: Path) -> None:
    import torch

    from simpletuner_flux.trainer import FluxTrainer

    family = get_registry().family("flux")
    dataloader = kontext_dataloader(home, demo_pairs)
    trainer = FluxTrainer(validate(flux_config(home, tiny_kontext_dir, dataloader, "tiny-kontext")), family, home)
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    latents, ref = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    text = trainer.encode_prompts(["make it blue", "make it red"])
    model = trainer.trainable()
    losses = []
    for conditioning in ([ref], [torch.zeros_like(ref)], [ref, ref]):
        torch.manual_seed(0)
        losses.append(float(trainer.loss(model, latents, text, conditioning=conditioning)))
    assert len(set(losses)) == 3  # the reference content and count change the prediction
    plain = FluxTrainer(validate(flux_config(home, tiny_flux_dir, dataloader, "tiny")), family, home)
    plain.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    with pytest.raises(ValueError, match="need a Kontext flavour"):
        plain.loss(plain.trainable(), latents, text, conditioning=[ref])


def test_reference_tokens_match_flux_kontext_pipeline_and_the_loss_is_the_target_mse(
        home: Path, tiny_kontext_dir: Path, demo_pairs: Path) -> None:
    """What the transformer sees is what FluxKontextPipeline builds (packed reference after the target tokens,
    reference ids with axis 0 = 1), and the loss is the MSE of the target tokens' prediction only."""
    import torch
    import torch.nn.functional as F
    from diffusers import FluxKontextPipeline

    from simpletuner_flux.packing import pack
    from simpletuner_flux.trainer import FluxTrainer

    config = validate(flux_config(home, tiny_kontext_dir, kontext_dataloader(home, demo_pairs), "tiny-kontext"))
    trainer = FluxTrainer(config, get_registry().family("flux"), home)
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    model = trainer.trainable()
    seen: dict[str, Any] = {}

    def recording(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return model(**kwargs)

    recording.parameters = model.parameters  # type: ignore[attr-defined]
    latents, ref = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 6)  # a reference of another size
    text = trainer.encode_prompts(["make it blue", "make it red"])
    torch.manual_seed(0)
    with torch.no_grad():
        loss = trainer.loss(recording, latents, text, conditioning=[ref])

    n = 16  # 8×8 latents → 4×4 tokens
    theirs_ref = FluxKontextPipeline._pack_latents(ref, 2, 4, 8, 6)
    target_ids = FluxKontextPipeline._prepare_latent_image_ids(2, 4, 4, "cpu", torch.float32)
    ref_ids = FluxKontextPipeline._prepare_latent_image_ids(2, 4, 3, "cpu", torch.float32)
    ref_ids[..., 0] = 1
    assert torch.equal(seen["hidden_states"][:, n:], theirs_ref)
    assert torch.equal(seen["img_ids"], torch.cat([target_ids, ref_ids], dim=0))

    torch.manual_seed(0)  # the loss's own draws, in its order: noise, then sigma
    noise = torch.randn_like(latents)
    sigma = torch.sigmoid(torch.randn(2)).view(2, 1, 1, 1)
    noisy = FluxKontextPipeline._pack_latents((1 - sigma) * latents + sigma * noise, 2, 4, 8, 8)
    assert torch.allclose(seen["hidden_states"][:, :n], noisy, atol=1e-6)
    with torch.no_grad():
        pred = model(**seen)[0]
    assert pred.shape[1] == n + 12
    expected = F.mse_loss(pred[:, :n], pack(noise - latents))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_two_reference_sets_combined_or_random(home: Path, tiny_kontext_dir: Path, demo_pairs: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from simpletuner_flux.trainer import FluxTrainer

    shutil.copytree(demo_pairs / "reference", home / "reference-2")
    dataloader = json.loads(kontext_dataloader(home, demo_pairs).read_text())
    second = dict(dataloader[1], id="kontext-reference-2", instance_data_dir=str(home / "reference-2"),
                  conditioning_type="reference_loose", cache_dir_vae=str(home / "cache" / "vae" / "r2"))
    dataloader[0]["conditioning_data"] = ["kontext-reference", "kontext-reference-2"]
    path = home / "config" / "two.json"
    path.write_text(json.dumps([dataloader[0], dataloader[1], second, dataloader[2]]))
    seen: list[int] = []
    original = FluxTrainer.loss

    def counting(self: Any, model: Any, latents: Any, text: Any, conditioning: Any = None) -> Any:
        seen.append(len(conditioning or []))
        return original(self, model, latents, text, conditioning=conditioning)

    monkeypatch.setattr(FluxTrainer, "loss", counting)
    for mode, expected in (("combined", {2}), ("random", {1})):
        seen.clear()
        raw = flux_config(home, tiny_kontext_dir, path, "tiny-kontext", max_train_steps=4,
                          conditioning_multidataset_sampling=mode, output_dir=str(home / mode))
        code, result, _ = train(raw, home, job_id=mode)
        assert code == 0 and result.global_step == 4
        assert set(seen) == expected


def test_pairs_need_a_kontext_flavour(home: Path, tiny_flux_dir: Path, demo_pairs: Path) -> None:
    raw = flux_config(home, tiny_flux_dir, kontext_dataloader(home, demo_pairs), "tiny", max_train_steps=2)
    code, _, events = train(raw, home)
    assert code == 2
    reason = next(e for e in events if e.type == "job.failed").data["reason"]
    assert "cannot train on reference images; use model_flavour kontext or tiny-kontext" in reason
    assert not any(e.type == "job.stage" and e.data["stage"] == "init_load_base_model" for e in events)


def test_loose_references_of_mixed_sizes_are_refused_before_collate(home: Path, tiny_kontext_dir: Path,
                                                                     demo_pairs: Path, tmp_path: Path) -> None:
    from PIL import Image

    refs = tmp_path / "refs"
    shutil.copytree(demo_pairs / "reference", refs)
    Image.new("RGB", (128, 64), "red").save(refs / "pair_001.png")  # one wide reference
    dataloader = json.loads(kontext_dataloader(home, demo_pairs, "reference_loose").read_text())
    dataloader[1]["instance_data_dir"] = str(refs)
    path = home / "config" / "loose.json"
    path.write_text(json.dumps(dataloader))
    code, _, events = train(flux_config(home, tiny_kontext_dir, path, "tiny-kontext", train_batch_size=2), home)
    assert code == 2
    reason = next(e for e in events if e.type == "job.failed").data["reason"]
    assert "have references of different sizes" in reason and "64x64, 96x48" in reason


def test_validation_previews_get_unpacked_latents(home: Path, tiny_kontext_dir: Path, demo_pairs: Path) -> None:
    import torch
    from PIL import Image

    from simpletuner_flux.trainer import FluxTrainer

    raw = flux_config(home, tiny_kontext_dir, kontext_dataloader(home, demo_pairs), "tiny-kontext",
                      validation_prompt="make it blue", validation_num_inference_steps=2,
                      validation_resolution="64x32")
    config = validate(raw)
    trainer = FluxTrainer(config, get_registry().family("flux"), home)
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    trainer.use_validation_inputs((64, 64), [Image.new("RGB", (64, 64), "red")])
    seen: list[tuple[int, int, tuple[int, ...]]] = []
    images = trainer.validation_images(trainer.trainable(), config,
                                       on_latents=lambda i, n, t, lat: seen.append((i, n, tuple(lat.shape))))
    assert [im.size for im in images] == [(64, 32)]
    assert seen == [(0, 2, (1, 4, 4, 8)), (1, 2, (1, 4, 4, 8))]
