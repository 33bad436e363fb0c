"""The flux plugin registers its family through the hooks, stays light, and rejects impossible configs clearly."""

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


def base(**overrides: object) -> dict[str, object]:
    return {"--model_family": "flux", "--model_flavour": "kontext", "--output_dir": "/tmp/x",
            "--data_backend_config": "x.json", "--max_train_steps": 1, "--model_type": "lora",
            **{f"--{k}": v for k, v in overrides.items()}}


def test_entry_point_registers_the_flux_family_and_flavours() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="simpletuner")}
    assert names.get("flux") == "simpletuner_flux.plugin"
    assert get_plugin_manager().get_plugin("flux") is not None
    registry = get_registry()
    assert registry.families.owner("flux") == "flux" and registry.family("flux1").name == "flux"
    flavours = {n: f.hub_id for n, f in registry.family("flux").flavours.items()}
    assert flavours["dev"] == "black-forest-labs/FLUX.1-dev"
    assert flavours["kontext"] == "black-forest-labs/FLUX.1-Kontext-dev"
    assert {"schnell", "krea", "tiny", "tiny-kontext"} <= set(flavours)
    assert flavours["tiny"] is None and flavours["tiny-kontext"] is None


def test_tutorial_kontext_keys_validate() -> None:
    cfg = validate(base(lora_type="lycoris", optimizer="optimi-lion", base_model_precision="int8-quanto",
                        lora_rank=16, lora_dropout=0.05, conditioning_multidataset_sampling="combined", clip_skip=2))
    assert cfg.clip_skip == 2 and cfg.flux_guidance_value == 1.0


def test_unknown_flavour_lists_the_known_ones() -> None:
    with pytest.raises(ConfigInvalid) as info:
        validate(base(model_flavour="kontex"))
    err = info.value.errors[0]
    assert err.path == "model_flavour" and "tiny-kontext" in err.message and err.did_you_mean == "kontext"


def test_flux_keys_and_comfyui_format_are_refused_for_pixart() -> None:
    with pytest.raises(ConfigInvalid) as info:
        validate(base(model_family="pixart", model_flavour="tiny", flux_guidance_value=3.5, lora_format="comfyui",
                      clip_skip=1))
    paths = {e.path: e.message for e in info.value.errors}
    assert "applies only to model_family flux" in paths["flux_guidance_value"]
    assert "has no comfyui key map" in paths["lora_format"]
    assert "no CLIP text encoder" in paths["clip_skip"]


def test_plugin_module_does_not_import_torch() -> None:
    code = ("import sys, simpletuner_flux.plugin, simpletuner_flux.examples; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_saved_configs_with_every_key_revalidate_for_both_families() -> None:
    """Jobs store the full wire config: the flux keys at their defaults must not break a PixArt job."""
    from simpletuner_core.config.model import to_wire

    for family, flavour in (("pixart", "tiny"), ("flux", "tiny-kontext")):
        cfg = validate(base(model_family=family, model_flavour=flavour))
        assert "--flux_guidance_value" in to_wire(cfg)
        assert validate(to_wire(cfg)) == cfg


def test_an_unknown_lycoris_preset_name_is_a_config_error_at_validate(tmp_path: object) -> None:
    import json
    from pathlib import Path

    settings = Path(str(tmp_path)) / "lycoris.json"
    settings.write_text(json.dumps({"algo": "lokr", "apply_preset": "atention"}))
    with pytest.raises(ConfigInvalid) as info:
        validate(base(lora_type="lycoris", lycoris_config=str(settings)))
    [err] = info.value.errors
    assert err.path == "lycoris_config" and "apply_preset 'atention' is not a flux LyCORIS preset" in err.message
    assert err.did_you_mean == "attention"
    settings.write_text(json.dumps({"algo": "lokr", "apply_preset": "attention"}))
    validate(base(lora_type="lycoris", lycoris_config=str(settings)))


def test_the_familys_preset_names_are_the_trainers_presets() -> None:
    from simpletuner_flux.trainer import LORA_TARGETS, LYCORIS_PRESETS

    assert get_registry().family("flux").lycoris_presets == tuple(sorted(LYCORIS_PRESETS))
    assert LYCORIS_PRESETS["attention"]["target_name"] == [f"*{t}" for t in LORA_TARGETS]
