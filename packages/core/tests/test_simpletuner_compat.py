"""Every SimpleTuner config key is known here, with exactly one status, and each status behaves as documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from simpletuner_core.config import ConfigInvalid, compat, validate, warnings_for
from simpletuner_core.config.model import config_class, structure

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def families(isolated_plugins: Any) -> list[str]:
    """Both model families loaded (their keys count as implemented); our config field names."""
    isolated_plugins(SIMPLETUNER_LOAD_PLUGINS="pixart,flux")
    return [a.name for a in attrs.fields(config_class())]


def base(**extra: Any) -> dict[str, Any]:
    return {"--model_family": "pixart_sigma", "--model_flavour": "tiny", "--output_dir": "/tmp/out",
            "--data_backend_config": "/tmp/dl.json", "--max_train_steps": 10, **extra}


def errors(raw: dict[str, Any]) -> dict[str, str]:
    try:
        validate(raw)
    except ConfigInvalid as exc:
        return {e.path: e.message for e in exc.errors}
    return {}


def registry_default(key: compat.PeerKey) -> Any:
    """The value SimpleTuner's own generated config writes for ``key`` (its registry default, typed)."""
    text = key.default.strip()
    if not text:
        return None
    if key.type == "CHECKBOX":
        return text.lower() == "true"
    if key.type == "NUMBER":
        try:
            return int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            return text
    return text


def test_the_shipped_table_has_every_registry_key() -> None:
    keys = compat.peer_keys()
    assert len(keys) == 539
    assert {"checkpoint_step_interval", "controlnet", "fuse_qkv_projections", "tread_config"} <= set(keys)
    counts = {imp: sum(k.importance == imp for k in keys.values()) for imp in ("ESSENTIAL", "IMPORTANT")}
    assert counts == {"ESSENTIAL": 12, "IMPORTANT": 34}


def test_every_key_has_exactly_one_status_with_its_reason(families: list[str]) -> None:
    statuses = compat.statuses(families)
    assert set(compat.peer_keys()) <= set(statuses)
    for name, st in statuses.items():
        assert st.status in compat.STATUSES, name
        if st.status == "implemented":
            assert name in families
        elif st.status == "alias":
            assert st.detail.removeprefix("not ") in families, name
        else:
            assert st.detail and name not in families, name


def test_docs_list_every_key_with_its_status(families: list[str]) -> None:
    from simpletuner_core.config.reference import render_compat_markdown

    docs = ROOT / "docs" / "simpletuner-compat.md"
    assert docs.read_text() == render_compat_markdown(), (
        "regenerate: SIMPLETUNER_LOAD_PLUGINS=pixart,flux simpletuner config compat > docs/simpletuner-compat.md")


def test_a_config_with_every_key_at_simpletuners_default_validates(families: list[str]) -> None:
    """What SimpleTuner's generated configs look like: every key present, most at their registry default."""
    raw = {f"--{k.name}": registry_default(k) for k in compat.peer_keys().values()}
    raw.update(base(**{"--max_train_steps": 0, "--num_train_epochs": 1}))
    raw["data_backend_config"] = raw["--data_backend_config"]  # SimpleTuner writes both spellings
    raw.update({"--checkpoint_epoch_interval": None, "--use_ema": False, "--gradient_checkpointing": True})
    assert errors(raw) == {}
    notes = warnings_for(validate(raw), raw)
    summary = [n for n in notes if "at their defaults have no effect here" in n]
    assert len(summary) == 1 and "ideogram_auto_json" in summary[0] and "merge_environment_config" in summary[0]


def test_no_simpletuner_key_is_ever_unknown(families: list[str]) -> None:
    for name in compat.peer_keys():
        for value in (True, 1, "x", None):
            found = errors(base(**{f"--{name}": value}))
            assert all("unknown config key" not in msg for msg in found.values()), (name, value, found)
            assert all(path and msg for path, msg in found.items()), (name, value, found)


@pytest.mark.parametrize("off", [False, None, 0, "", "false"])
def test_unsupported_keys_are_accepted_off_and_refused_on(families: list[str], off: Any) -> None:
    assert errors(base(**{"--controlnet": off})) == {}
    assert errors(base(**{"--controlnet": True})) == {"controlnet": "ControlNet training is not supported here"}
    assert errors(base(**{"controlnet": "true", "--fsdp_enable": "true"})) == {
        "controlnet": "ControlNet training is not supported here",
        "fsdp_enable": "FSDP is not supported here; multi-GPU runs use DDP (torchrun/accelerate)"}


def test_an_unsupported_key_at_simpletuners_default_is_off(families: list[str]) -> None:
    assert errors(base(**{"--flux_guidance_mode": "constant", "--lr_end": "4e-07"})) == {}
    assert errors(base(**{"--lr_end": 1e-5}))["lr_end"] == "schedules decay to 0 here"


def test_wrong_types_name_the_key(families: list[str]) -> None:
    found = errors(base(**{"--controlnet": "banana", "--ideogram_schedule_mu": "abc",
                           "--validation_multigpu": "sideways"}))
    assert found["controlnet"] == "expected true/false, got 'banana'"
    assert found["ideogram_schedule_mu"] == "expected a number, got 'abc'"
    assert found["validation_multigpu"].startswith("must be one of single-gpu, batch-parallel")


def test_inert_keys_are_named_once_in_a_warning(families: list[str]) -> None:
    raw = base(**{"--ideogram_schedule_mu": 0.5, "--print_filenames": True, "--aspect_ratio_bucketing": True,
                  "--tracker_image_layout": "gallery"})
    cfg = validate(raw)
    notes = warnings_for(cfg, raw)
    assert "ideogram_schedule_mu has no effect here: applies only to SimpleTuner's ideogram model family" in notes
    assert "print_filenames has no effect here: extra debug output of SimpleTuner's data loader" in notes
    assert any(n.startswith("aspect_ratio_bucketing has no effect here") for n in notes)
    assert sum("tracker_image_layout" in n for n in notes) == 1  # at its default: in the one summary line
    assert warnings_for(cfg) == []  # without the raw config nothing is invented


def test_value_spellings_of_simpletuner_are_accepted(families: list[str]) -> None:
    assert validate(base(**{"--validation_method": "simpletuner-local"})).validation_method == "pipeline"
    assert structure(base(**{"--report_to": "comet_ml"})).report_to == "comet"


@pytest.mark.parametrize(("typo", "meant"), [
    ("learning_rat", "learning_rate"), ("grad_clip_methd", "grad_clip_method"),
    ("vae_batch_sise", "vae_batch_size"), ("checkpoint_steps_interval", "checkpoint_step_interval"),
    ("chekpointing_steps", "checkpointing_steps"), ("lora_rnk", "lora_rank"),
])
def test_did_you_mean_finds_the_key_meant(families: list[str], typo: str, meant: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        validate(base(**{f"--{typo}": 1}))
    (err,) = info.value.errors
    assert (err.path, err.message, err.did_you_mean) == (typo, "unknown config key", meant)


@pytest.mark.parametrize("word", ["grad_clip_mode", "vae_batch_count", "totally_new_key", "method"])
def test_did_you_mean_does_not_point_at_unrelated_keys(families: list[str], word: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        validate(base(**{f"--{word}": 1}))
    (err,) = info.value.errors
    assert err.message == "unknown config key"
    assert err.did_you_mean not in ("validation_method", "train_batch_size", "lr_scheduler")


def _same(ours: Any, theirs: Any) -> bool:
    from simpletuner_core.config.migrations import VALUE_ALIASES

    if ours in (None, "", 0, False) and theirs in (None, "", 0, False):
        return True
    if isinstance(ours, (int, float)) and not isinstance(ours, bool) and isinstance(theirs, (int, float)):
        return float(ours) == float(theirs)
    spelled = {k: v for table in VALUE_ALIASES.values() for k, v in table.items()}
    return ours == theirs or (theirs in spelled and spelled[theirs] == ours)


def test_every_implemented_key_defaults_to_simpletuners_value(families: list[str]) -> None:
    from simpletuner_core.config.compat_status import DEFAULT_DIFFERENCES

    ours = {a.name: a.default for a in attrs.fields(config_class())}
    drift = {}
    for name, key in compat.peer_keys().items():
        if name in ours and not _same(ours[name], registry_default(key)) and name not in DEFAULT_DIFFERENCES:
            drift[name] = (ours[name], key.default)
    assert drift == {}, "a default differs from SimpleTuner's: take theirs or list it in DEFAULT_DIFFERENCES"
    stale = [n for n in DEFAULT_DIFFERENCES if _same(ours[n], registry_default(compat.peer_keys()[n]))]
    assert stale == []


def test_a_config_of_required_keys_runs_with_simpletuners_defaults(families: list[str]) -> None:
    from simpletuner_core.config.show import effective

    table = effective(base())
    assert {k: table[k]["value"] for k in ("max_grad_norm", "lr_scheduler", "train_batch_size",
                                           "gradient_checkpointing", "lora_dropout", "checkpoints_total_limit",
                                           "resume_from_checkpoint", "grad_clip_method")} == {
        "max_grad_norm": 2.0, "lr_scheduler": "constant_with_warmup", "train_batch_size": 4,
        "gradient_checkpointing": True, "lora_dropout": 0.1, "checkpoints_total_limit": 5,
        "resume_from_checkpoint": "latest", "grad_clip_method": "value"}
    assert all(table[k]["source"] == "default" for k in ("max_grad_norm", "lr_scheduler"))


def test_settings_whose_feature_is_off_are_named_when_given(families: list[str]) -> None:
    raw = base(**{"--validation_guidance": 3.0, "--main_process_port": 29600, "--hub_model_id": "me/x",
                  "--validation_num_inference_steps": 30})
    notes = warnings_for(validate(raw), raw)
    assert "validation_guidance has no effect: validation never runs (no validation_prompt is set)" in notes
    assert "main_process_port has no effect with num_machines=1: it is the multi-node rendezvous" in notes
    assert any(n.startswith("hub_model_id has no effect without push_to_hub") for n in notes)
    assert not any(n.startswith("validation_num_inference_steps") for n in notes)  # at its default: not named
    on = base(**{"--validation_guidance": 3.0, "--validation_prompt": "a cat", "--num_machines": 2,
                 "--main_process_ip": "10.0.0.1", "--main_process_port": 29600})
    assert not [n for n in warnings_for(validate(on), on) if ("has no effect" in n and "validation" in n) or
                "rendezvous" in n]
