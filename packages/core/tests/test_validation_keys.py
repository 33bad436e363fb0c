"""Validation prompt keys without a model: what is rendered, and the config errors for a bad prompt library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config import ConfigInvalid, validate, warnings_for
from simpletuner_core.training.validation import BUILTIN_PROMPT_LIBRARY, validation_prompts


def base(**extra: Any) -> dict[str, Any]:
    return {"--model_family": "pixart_sigma", "--model_flavour": "tiny", "--output_dir": "/tmp/out",
            "--data_backend_config": "x.json", "--max_train_steps": 10, **extra}


def test_prompts_in_order_with_the_unconditional_last(tmp_path: Path) -> None:
    library = tmp_path / "lib.json"
    library.write_text(json.dumps({"cat": "a cat", "dog": "a dog"}))
    cfg = validate(base(**{"--validation_prompt": "main", "--user_prompt_library": str(library),
                           "--validation_prompt_library": True}))
    prompts = validation_prompts(cfg)
    assert [(p.name, p.prompt) for p in prompts] == [
        ("validation", "main"), *BUILTIN_PROMPT_LIBRARY.items(), ("cat", "a cat"), ("dog", "a dog"),
        ("unconditional", "")]
    off = validate(base(**{"--validation_prompt": "main", "--validation_disable_unconditional": True}))
    assert [p.name for p in validation_prompts(off)] == ["validation"]
    assert 3 <= len(BUILTIN_PROMPT_LIBRARY) and all(v.strip() for v in BUILTIN_PROMPT_LIBRARY.values())


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read"),
    ("{not json", "is not valid JSON"),
    ('["a cat"]', "expected a JSON object"),
    ("{}", "has no prompts"),
    ('{"cat": "a cat", "n": 3, "e": " "}', "non-empty prompt string; not so for n, e"),
])
def test_a_bad_user_prompt_library_is_a_config_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "lib.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigInvalid) as info:
        validate(base(**{"--user_prompt_library": str(path)}))
    errors = {e.path: e.message for e in info.value.errors}
    assert message in errors["user_prompt_library"], errors


def test_guidance_rescale_range_and_library_without_a_prompt_warning(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as info:
        validate(base(**{"--validation_guidance_rescale": 1.5}))
    assert [e.path for e in info.value.errors] == ["validation_guidance_rescale"]
    notes = warnings_for(validate(base(**{"--validation_prompt_library": True})))
    assert any("needs a validation_prompt" in n for n in notes)
