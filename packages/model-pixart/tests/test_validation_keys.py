"""Validation keys on the tiny PixArt model: unconditional image, prompt libraries, guidance rescale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simpletuner_core.cli.jobs_local import run_job
from simpletuner_core.config import validate, warnings_for
from simpletuner_core.events.log import read_events
from simpletuner_core.plugins import get_registry
from simpletuner_core.training.validation import BUILTIN_PROMPT_LIBRARY

FAST = {"validation_num_inference_steps": 1, "validation_resolution": "64x64"}


def test_events_carry_the_prompt_libraries_and_an_unconditional_image(home: Path, tiny_cfg: Any) -> None:
    library = home / "prompts.json"
    library.write_text(json.dumps({"red": "a red square", "dots": "small blue dot on white"}))
    raw = tiny_cfg(max_train_steps=1, validation_prompt="a green circle", validation_prompt_library=True,
                   user_prompt_library=str(library), **FAST)
    code, _ = run_job(validate(raw), home, get_registry(), job_id="job")
    assert code == 0
    images = [e for e in read_events(home / "jobs" / "job" / "events.jsonl") if e.type == "validation.image"]
    names = [e.data["prompt_name"] for e in images]
    assert names == ["validation", *BUILTIN_PROMPT_LIBRARY, "red", "dots", "unconditional"]
    by_name = {e.data["prompt_name"]: e.data for e in images}
    assert by_name["validation"]["title"] == "Validation (step 1): a green circle"
    assert by_name["red"]["prompt"] == "a red square"
    assert by_name["red"]["title"] == "Validation (step 1, red): a red square"
    assert by_name["portrait"]["prompt"] == BUILTIN_PROMPT_LIBRARY["portrait"]
    uncond = by_name["unconditional"]
    assert uncond["prompt"] == "" and uncond["title"] == "Validation (step 1, unconditional)"
    assert all(e.data["validation_type"] == "final" and e.data["resolution"] == [64, 64] for e in images)
    paths = {e.data["path"] for e in images}
    assert len(paths) == len(images) and all(Path(p).exists() for p in paths)


def _render(tiny_cfg: Any, home: Path, **overrides: Any) -> list[Any]:
    import torch

    from simpletuner_pixart.trainer import PixArtSigmaTrainer

    cfg = validate(tiny_cfg(validation_prompt="a red square", validation_seed=1, **{**FAST, **overrides}))
    registry = get_registry()
    trainer = PixArtSigmaTrainer(cfg, registry.family("pixart"), home)
    trainer.load(torch.device("cpu"), torch.float32, lambda _msg: None)
    return registry.validation_methods.get("pipeline").run(trainer, trainer.trainable(), cfg, 0)


def test_the_unconditional_image_renders_the_empty_prompt_unless_disabled(tiny_cfg: Any, home: Path) -> None:
    import numpy as np

    both = _render(tiny_cfg, home, validation_num_inference_steps=2)
    assert [(r.name, r.prompt) for r in both] == [("validation", "a red square"), ("unconditional", "")]
    assert not np.array_equal(np.asarray(both[0].image), np.asarray(both[1].image))
    only = _render(tiny_cfg, home, validation_num_inference_steps=2, validation_disable_unconditional=True)
    assert [r.name for r in only] == ["validation"]
    assert np.array_equal(np.asarray(only[0].image), np.asarray(both[0].image))


def test_guidance_rescale_is_passed_only_where_the_pipeline_takes_it_and_warned_elsewhere(tiny_cfg: Any) -> None:
    from diffusers import FluxPipeline, PixArtSigmaPipeline, StableDiffusionXLPipeline

    from simpletuner_core.training.validation import guidance_kwargs

    cfg = validate(tiny_cfg(validation_guidance_rescale=0.7))
    assert guidance_kwargs(StableDiffusionXLPipeline, cfg) == {"guidance_rescale": 0.7}
    assert guidance_kwargs(PixArtSigmaPipeline, cfg) == {} and guidance_kwargs(FluxPipeline, cfg) == {}
    assert guidance_kwargs(StableDiffusionXLPipeline, validate(tiny_cfg())) == {}
    notes = warnings_for(cfg)
    assert ("validation_guidance_rescale has no effect for pixart_sigma: its diffusers pipeline "
            "(PixArtSigmaPipeline) takes no guidance_rescale argument") in notes
    flux = validate({"--model_family": "flux", "--model_flavour": "tiny", "--output_dir": "/tmp/o",
                     "--data_backend_config": "x.json", "--max_train_steps": 1,
                     "--validation_guidance_rescale": 0.7})
    assert any(n.startswith("validation_guidance_rescale has no effect for flux") for n in warnings_for(flux))
    assert warnings_for(validate(tiny_cfg())) == []
