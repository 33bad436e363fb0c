"""Config builders shared by the core config tests: a minimal tiny-PixArt config and its errors by path."""

from __future__ import annotations

from typing import Any

import pytest

from simpletuner_core.config import ConfigInvalid, validate


def base(**extra: Any) -> dict[str, Any]:
    return {"--model_family": "pixart_sigma", "--model_flavour": "tiny", "--model_type": "full",
            "--output_dir": "/tmp/out", "--data_backend_config": "x.json", "--max_train_steps": 10, **extra}


def errors_of(raw: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ConfigInvalid) as info:
        validate(raw)
    return {e.path: e for e in info.value.errors}
