"""The flux plugin is discovered through its entry point, stays light, and does not pretend to train."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from simpletuner_core.config import ConfigInvalid, validate
from simpletuner_core.plugins import get_plugin_manager, get_registry, reset_plugin_manager


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SIMPLETUNER_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("SIMPLETUNER_LOAD_PLUGINS", raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def test_entry_point_is_declared_and_loaded() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="simpletuner")}
    assert names.get("flux") == "simpletuner_flux.plugin"
    assert get_plugin_manager().get_plugin("flux") is not None


def test_no_flux_family_is_claimed_yet() -> None:
    assert "flux" not in get_registry().families
    with pytest.raises(ConfigInvalid) as info:
        validate({"--model_family": "flux", "--model_flavour": "kontext", "--output_dir": "/tmp/x",
                  "--data_backend_config": "x.json", "--max_train_steps": 1})
    err = info.value.errors[0]
    assert err.path == "model_family" and "pixart_sigma" in err.message


def test_plugin_module_does_not_import_torch() -> None:
    code = "import sys, simpletuner_flux.plugin; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
