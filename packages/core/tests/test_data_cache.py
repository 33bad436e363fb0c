"""Content-addressed caches with a real (tiny) diffusers VAE: only changed inputs are re-encoded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from simpletuner_core.data.cache import LatentCache, TextEmbedCache, content_key
from simpletuner_core.data.config import DatasetConfig
from simpletuner_core.data.images import load_pixels
from simpletuner_core.data.preflight import Plan, Sample, build_plan
from simpletuner_core.demo_data import write_demo_dataset
from simpletuner_core.plugins.registry import Registry


@pytest.fixture(scope="module")
def registry(data_registry: Registry) -> Registry:
    return data_registry


@pytest.fixture(scope="module")
def vae() -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=64,
    )
    return model.eval()


class CountingEncoder:
    """The VAE's encode, counting the images it is asked to encode."""

    def __init__(self, vae: torch.nn.Module) -> None:
        self.vae = vae
        self.seen = 0

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.seen += pixels.shape[0]
        with torch.no_grad():
            return self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor


def read_bytes(sample: Sample) -> bytes:
    return Path(sample.path).read_bytes()


def demo_plan(root: Path, registry: Registry) -> Plan:
    dataset = DatasetConfig(id="demo", instance_data_dir="images", resolution=64, resolution_type="pixel",
                            crop=True)
    plan = build_plan([dataset], base_dir=root, train_batch_size=2, registry=registry)
    assert plan.ok, plan.render()
    return plan


def test_latent_cache_reencodes_exactly_the_changed_image(tmp_path: Path, registry: Registry,
                                                          vae: torch.nn.Module) -> None:
    paths = write_demo_dataset(tmp_path / "images", count=6)
    cache_dir = tmp_path / "cache"
    plan = demo_plan(tmp_path, registry)

    first = CountingEncoder(vae)
    progress: list[tuple[int, int]] = []
    stats = LatentCache(cache_dir, "tiny-vae").ensure(plan.samples, read_bytes, first, batch_size=4,
                                                      progress=lambda done, total: progress.append((done, total)))
    assert (first.seen, stats.encoded, stats.reused, stats.total) == (6, 6, 0, 6)
    assert progress == [(4, 6), (6, 6)]
    assert len(list(cache_dir.rglob("*.safetensors"))) == 6

    second = CountingEncoder(vae)
    cache = LatentCache(cache_dir, "tiny-vae")
    stats = cache.ensure(plan.samples, read_bytes, second, batch_size=4)
    assert second.seen == 0 and stats.reused == 6
    latent = cache.load(plan.samples[0])
    assert latent.shape == (4, 8, 8)

    with Image.open(paths[2]) as img:
        changed = img.copy()
    changed.putpixel((5, 5), (1, 2, 3))
    changed.save(paths[2])
    plan = demo_plan(tmp_path, registry)
    third = CountingEncoder(vae)
    cache = LatentCache(cache_dir, "tiny-vae", memory=False)
    stats = cache.ensure(plan.samples, read_bytes, third, batch_size=4)
    assert (third.seen, stats.encoded, stats.reused) == (1, 1, 5)
    for sample in plan.samples:
        assert cache.load(sample).shape == (4, 8, 8)
    # the loaded latent is what the encoder produced for that image
    expected = third(load_pixels(plan.samples[2], read_bytes(plan.samples[2]))[None])[0]
    torch.testing.assert_close(cache.load(plan.samples[2]), expected)

    other = CountingEncoder(vae)
    LatentCache(cache_dir, "another-vae").ensure(plan.samples, read_bytes, other, batch_size=8)
    assert other.seen == 6  # a different encoder never reuses these latents


def test_pixels_follow_the_plan(tmp_path: Path, registry: Registry) -> None:
    write_demo_dataset(tmp_path / "images", count=2, size=96)
    plan = demo_plan(tmp_path, registry)
    pixels = load_pixels(plan.samples[0], read_bytes(plan.samples[0]))
    assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.float32
    assert -1.0 <= pixels.min() and pixels.max() <= 1.0


def fake_text_encoder(calls: list[list[str]]) -> Callable[[list[str]], dict[str, torch.Tensor]]:
    def encode(captions: list[str]) -> dict[str, torch.Tensor]:
        calls.append(list(captions))
        lengths = torch.tensor([float(len(c)) for c in captions])
        return {"prompt_embeds": lengths[:, None, None].expand(-1, 3, 2).clone(),
                "attention_mask": torch.ones(len(captions), 3, dtype=torch.long)}

    return encode


def test_text_cache_dedupes_and_encodes_only_new_captions(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    cache = TextEmbedCache(tmp_path, "tiny-t5")
    stats = cache.ensure(["a cat", "a dog", "a cat", ""], fake_text_encoder(calls), batch_size=2)
    assert calls == [["a cat", "a dog"], [""]]
    assert (stats.encoded, stats.reused, stats.total) == (3, 1, 4)

    calls.clear()
    fresh = TextEmbedCache(tmp_path, "tiny-t5", memory=False)
    stats = fresh.ensure(["a cat", "a dog", "a bird"], fake_text_encoder(calls), batch_size=8)
    assert calls == [["a bird"]] and stats.encoded == 1
    entry = fresh.load("a bird")
    assert entry["prompt_embeds"].shape == (3, 2) and float(entry["prompt_embeds"][0, 0]) == 6.0
    assert entry["attention_mask"].dtype == torch.long
    assert TextEmbedCache(tmp_path, "tiny-t5").load("a cat")["prompt_embeds"].shape == (3, 2)
    with pytest.raises(KeyError, match="ensure"):
        fresh.load("never encoded")


def test_failing_encoder_propagates_and_leaves_no_partial_files(tmp_path: Path, registry: Registry) -> None:
    def broken(_: object) -> dict[str, torch.Tensor]:
        raise RuntimeError("encoder exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        TextEmbedCache(tmp_path / "text", "t5").ensure(["a", "b"], broken, batch_size=2)
    assert not any(p.is_file() for p in (tmp_path / "text").rglob("*"))

    write_demo_dataset(tmp_path / "images", count=2)
    plan = demo_plan(tmp_path, registry)
    with pytest.raises(RuntimeError, match="exploded"):
        LatentCache(tmp_path / "latents", "vae").ensure(plan.samples, read_bytes, broken, batch_size=2)
    assert not any(p.is_file() for p in (tmp_path / "latents").rglob("*"))

    # an encoder that breaks after one batch leaves only whole, loadable entries
    calls: list[list[str]] = []
    good = fake_text_encoder(calls)

    def flaky(captions: list[str]) -> dict[str, torch.Tensor]:
        if calls:
            raise RuntimeError("encoder exploded")
        return good(captions)

    cache = TextEmbedCache(tmp_path / "flaky", "t5", memory=False)
    with pytest.raises(RuntimeError):
        cache.ensure(["a", "b", "c"], flaky, batch_size=2)
    files = [p for p in (tmp_path / "flaky").rglob("*") if p.is_file()]
    assert len(files) == 2 and all(p.suffix == ".safetensors" for p in files)
    assert cache.load("a")["prompt_embeds"].shape == (3, 2)


def test_content_key_separates_parts() -> None:
    assert content_key("ab", "c") != content_key("a", "bc")
    assert content_key(b"x", "y") == content_key("x", b"y")
    assert len(content_key("x")) == 64
