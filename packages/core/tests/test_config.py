"""The config model: wire format, typed structure, rules with paths and did-you-mean, migrations."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core import hookimpl
from simpletuner_core import records as r
from simpletuner_core.config import ConfigInvalid, field_docs, structure, to_wire, validate
from simpletuner_core.config.migrations import CURRENT_VERSION, migrate
from simpletuner_core.plugins import get_plugin_manager, get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config_helpers import base, errors_of


@pytest.fixture(autouse=True)
def fresh(isolated_plugins: Any) -> None:
    isolated_plugins(SIMPLETUNER_LOAD_PLUGINS="pixart")


# The tutorial's PixArt example: the form fields of the fast path plus the PUT body of step 3.
TUTORIAL_PIXART = {
    "--model_family": "pixart_sigma", "--model_type": "full", "--model_flavour": "900M-1024-v0.6",
    "--pretrained_model_name_or_path": "terminusresearch/pixart-900m-1024-ft-v0.6",
    "--output_dir": "/workspace/output/pixart900m", "--data_backend_config": "pixart-api-demo/multidatabackend.json",
    "--train_batch_size": 2, "--gradient_accumulation_steps": 2, "--learning_rate": 0.0001,
    "--optimizer": "adamw_bf16", "--lr_scheduler": "cosine", "--lr_warmup_steps": 500, "--max_train_steps": 1800,
    "--num_train_epochs": 0, "--validation_prompt": "a studio portrait of <token> wearing a leather jacket",
    "--validation_guidance": 3.8, "--validation_resolution": "1024x1024", "--validation_num_inference_steps": 28,
    "--cache_dir_vae": "/data/cache/vae/pixart", "--seed": 1337, "--resume_from_checkpoint": "latest",
    "--base_model_precision": "bf16", "--dataloader_prefetch": True, "--report_to": "none",
    "--checkpoints_total_limit": 4, "--validation_seed": 12345,
    "--webhook_config": '[{"webhook_type":"raw","callback_url":"https://example.com/simpletuner",'
                        '"log_level":"info","ssl_no_verify":false}]',
    "--webhook_reporting_interval": 10, "--validation_method": "pipeline",
}

# The Kontext example's keys (the family arrives with the flux issue; here only key acceptance is checked).
TUTORIAL_KONTEXT_KEYS = {
    "--lora_type": "lycoris", "--optimizer": "optimi-lion", "--base_model_precision": "int8-quanto",
    "--report_to": "wandb", "--lora_rank": 16, "--lora_dropout": 0.05,
    "--conditioning_multidataset_sampling": "combined", "--clip_skip": 2,
}


def test_tutorial_pixart_example_is_valid_and_means_what_it_says() -> None:
    cfg = validate(TUTORIAL_PIXART)
    assert cfg.model_family == "pixart_sigma" and cfg.model_flavour == "900M-1024-v0.6"
    assert cfg.train_batch_size == 2 and cfg.gradient_accumulation_steps == 2
    assert cfg.learning_rate == 1e-4 and cfg.lr_warmup_steps == 500 and cfg.max_train_steps == 1800
    assert cfg.validation_resolution == "1024x1024" and cfg.validation_guidance == 3.8
    assert cfg.resume_from_checkpoint == "latest" and cfg.checkpoints_total_limit == 4
    assert cfg.dataloader_prefetch is True and cfg.seed == 1337


def test_tutorial_form_strings_are_coerced() -> None:
    form = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in TUTORIAL_PIXART.items()}
    cfg = validate(form)
    assert cfg.max_train_steps == 1800 and cfg.num_train_epochs == 0 and cfg.learning_rate == 1e-4
    assert cfg.dataloader_prefetch is True and cfg.validation_guidance == 3.8


def test_tutorial_kontext_keys_are_all_known() -> None:
    cfg = structure(base(**TUTORIAL_KONTEXT_KEYS, **{"--model_type": "lora"}))
    assert cfg.lora_type == "lycoris" and cfg.clip_skip == 2 and cfg.conditioning_multidataset_sampling == "combined"


def test_pixart_alias_is_the_same_family() -> None:
    assert validate(base(**{"--model_family": "pixart"})).model_family == "pixart"
    assert get_registry().family("pixart").name == "pixart_sigma"


def test_unknown_key_gets_did_you_mean() -> None:
    errs = errors_of(base(**{"--learnig_rate": 1e-4, "--totally_new": 1}))
    assert errs["learnig_rate"].did_you_mean == "learning_rate"
    assert errs["learnig_rate"].message == "unknown config key"
    assert errs["totally_new"].did_you_mean is None


def test_every_error_is_reported_at_once_with_its_path() -> None:
    errs = errors_of(base(**{"--train_batch_size": "two", "--use_ema": "maybe", "--seed": 1.5,
                             "--optimizer": "adamw9"}))
    assert "expected an integer" in errs["train_batch_size"].message
    assert "true/false" in errs["use_ema"].message
    assert "seed" in errs


def test_exactly_one_of_epochs_and_steps() -> None:
    assert "max_train_steps" in errors_of(base(**{"--num_train_epochs": 2}))
    assert "max_train_steps" in errors_of(base(**{"--max_train_steps": 0}))
    assert validate(base(**{"--max_train_steps": 0, "--num_train_epochs": 3})).num_train_epochs == 3
    assert "num_train_epochs" in errors_of(base(**{"--num_train_epochs": -1}))


def test_family_flavour_and_types_are_checked() -> None:
    errs = errors_of(base(**{"--model_family": "pixrt"}))
    assert errs["model_family"].did_you_mean == "pixart"
    errs = errors_of(base(**{"--model_flavour": "900M-1024-v06"}))
    assert errs["model_flavour"].did_you_mean == "900M-1024-v0.6"
    assert "model_type" in errors_of(base(**{"--model_type": "dora"}))
    assert errors_of(base(**{"--model_type": "lora", "--lora_type": "lokr"}))["lora_type"].message == (
        "unknown lora_type 'lokr' (known: lycoris, standard)")
    assert "model_family" in errors_of({k: v for k, v in base().items() if k != "--model_family"})


def test_adapter_keys_only_with_lora() -> None:
    errs = errors_of(base(**{"--lora_rank": 8, "--lora_type": "lycoris"}))
    assert errs["lora_rank"].message == "only applies with model_type=lora"
    assert "lora_type" in errs
    assert validate(base(**{"--model_type": "lora", "--lora_rank": 8})).lora_rank == 8


def test_components_come_from_the_registries() -> None:
    errs = errors_of(base(**{"--optimizer": "adamw9", "--lr_scheduler": "cosin", "--base_model_precision": "int8"}))
    assert errs["optimizer"].did_you_mean in {"adamw", "adamw8bit"}
    assert errs["lr_scheduler"].did_you_mean == "cosine"
    assert "no_change" in errs["base_model_precision"].message


def test_unavailable_optimizer_says_which_package() -> None:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        assert validate(base(**{"--optimizer": "adamw8bit"})).optimizer == "adamw8bit"
    else:
        assert "pip install bitsandbytes" in errors_of(base(**{"--optimizer": "adamw8bit"}))["optimizer"].message


def test_clip_skip_rejected_where_it_cannot_apply() -> None:
    assert "no CLIP text encoder" in errors_of(base(**{"--clip_skip": 2}))["clip_skip"].message


def test_numeric_and_format_rules() -> None:
    errs = errors_of(base(**{"--train_batch_size": 0, "--lora_dropout": 1.5, "--validation_resolution": "big",
                             "--learning_rate": 0}))
    assert {"train_batch_size", "validation_resolution", "learning_rate"} <= set(errs)


def test_required_paths() -> None:
    raw = {k: v for k, v in base().items() if k not in ("--output_dir", "--data_backend_config")}
    errs = errors_of(raw)
    assert errs["output_dir"].message == "required" and errs["data_backend_config"].message == "required"


def test_non_object_config() -> None:
    with pytest.raises(ConfigInvalid, match="expected a JSON object"):
        validate(["--model_family"])  # type: ignore[arg-type]


def test_empty_form_value_unsets_an_optional_key() -> None:
    assert validate(base(**{"--seed": "", "--validation_prompt": ""})).seed is None


def test_migrations_bring_old_configs_forward() -> None:
    old = {"model_family": "pixart_sigma", "lora_type": "Standard", "optimizer": "AdamW", "__active_tab__": "model"}
    new = migrate(old)
    assert new["config_version"] == CURRENT_VERSION and new["lora_type"] == "standard"
    assert new["optimizer"] == "adamw" and "__active_tab__" not in new
    assert old["lora_type"] == "Standard"  # pure: input untouched
    assert validate({**base(), "--optimizer": "AdamW"}).optimizer == "adamw"  # no version = version 0


def test_newer_config_version_is_refused() -> None:
    assert "newer than this release" in errors_of(base(**{"--config_version": CURRENT_VERSION + 1}))[
        "config_version"].message


def test_plugin_contributed_fields() -> None:
    class Fields:
        @hookimpl
        def register_config_fields(self, register: Any) -> None:
            register(r.ConfigField("pixart_extra_scale", float, 1.0, "demo", family="pixart_sigma"))
            register(r.ConfigField("other_family_knob", int, 3, "demo", family="someone_else"))

    get_plugin_manager().register(Fields(), name="fields")
    get_registry().refresh()
    cfg = validate(base(**{"--pixart_extra_scale": "2.5"}))
    assert cfg.pixart_extra_scale == 2.5 and cfg.other_family_knob == 3
    assert errors_of(base(**{"--other_family_knob": 4}))["other_family_knob"].message.startswith("applies only")
    assert any(d["name"] == "pixart_extra_scale" for d in field_docs())


def test_round_trip_to_wire() -> None:
    cfg = validate(base())
    assert validate(to_wire(cfg)) == cfg
    assert all(key.startswith("--") for key in to_wire(cfg))


def test_field_docs_cover_every_core_key() -> None:
    docs = {d["name"]: d for d in field_docs()}
    assert docs["learning_rate"]["help"] and docs["model_type"]["choices"] == ["full", "lora"]


def test_docs_config_reference_is_generated_from_the_model(isolated_plugins: Any) -> None:
    from pathlib import Path

    from simpletuner_core.config.reference import render_markdown

    isolated_plugins(SIMPLETUNER_LOAD_PLUGINS="pixart,flux")  # the model families' keys are documented too
    docs = Path(__file__).resolve().parents[3] / "docs" / "config-reference.md"
    assert docs.read_text() == render_markdown(), (
        "regenerate: SIMPLETUNER_LOAD_PLUGINS=pixart,flux simpletuner config reference > docs/config-reference.md")


def test_non_finite_numbers_betas_and_resolution_multiples() -> None:
    errs = errors_of(base(**{"--learning_rate": "nan", "--max_grad_norm": "inf", "--adam_beta1": 1.5,
                             "--validation_resolution": "100x64"}))
    assert "finite" in errs["learning_rate"].message and "finite" in errs["max_grad_norm"].message
    assert errs["adam_beta1"].message == "must be in [0, 1)"
    assert "100x64 is not a multiple of 16" in errs["validation_resolution"].message


def test_missing_lycoris_config_file_is_caught_before_training(tmp_path: Any) -> None:
    errs = errors_of(base(**{"--model_type": "lora", "--lora_type": "lycoris",
                             "--lycoris_config": str(tmp_path / "nope.json")}))
    assert errs["lycoris_config"].message.startswith("file not found")


def test_plugin_field_choices_are_enforced() -> None:
    class Fields:
        @hookimpl
        def register_config_fields(self, register: Any) -> None:
            register(r.ConfigField("toy_mode", str, "a", "demo", choices=("a", "b")))

    get_plugin_manager().register(Fields(), name="fields")
    get_registry().refresh()
    assert errors_of(base(**{"--toy_mode": "bogus"}))["toy_mode"].message == "must be one of a, b; got 'bogus'"


def test_accepted_but_inert_keys_are_flagged() -> None:
    from simpletuner_core.config import warnings_for

    cfg = validate(base(**{"--validation_noise_scheduler": "ddim", "--push_to_hub": "true",
                           "--hub_model_id": "me/model"}))
    notes = warnings_for(cfg)
    assert any(n.startswith("validation_noise_scheduler is accepted but has no effect yet") for n in notes)
    assert not any(n.startswith("push_to_hub") for n in notes)  # implemented: no longer inert
    assert warnings_for(validate(base())) == []


@pytest.mark.parametrize(("overrides", "path", "message"), [
    ({"--push_to_hub": True}, "hub_model_id", "required with push_to_hub"),
    ({"--validation_method": "external-script"}, "validation_external_script", "required with"),
    ({"--post_checkpoint_script": "run.sh {global_stepp}"}, "post_checkpoint_script", "unknown placeholder"),
    ({"--post_upload_script": "notify 'unterminated"}, "post_upload_script", "quotation"),
    ({"--hook_script_timeout": 0}, "hook_script_timeout", "must be > 0"),
])
def test_hook_and_publishing_rules(overrides: dict[str, Any], path: str, message: str) -> None:
    errors = errors_of(base(**overrides))
    assert message in errors[path].message, errors


@pytest.mark.parametrize(("report_to", "package"), [("wandb", "wandb"), ("comet", "comet-ml")])
def test_a_tracker_that_is_not_installed_is_a_warning_not_an_error(report_to: str, package: str) -> None:
    import importlib.util

    from simpletuner_core.config import warnings_for
    from simpletuner_core.config.rules import TRACKER_PACKAGES

    if importlib.util.find_spec(TRACKER_PACKAGES[report_to][0]) is not None:
        pytest.skip(f"{package} is installed here")
    notes = warnings_for(validate(base(**{"--report_to": report_to})))
    assert [n for n in notes if n.startswith(f"report_to={report_to}")] == [
        f"report_to={report_to} needs the `{package}` package (pip install {package}); "
        "training will continue without that tracker"]
    assert not any(n.startswith("report_to") for n in warnings_for(validate(base(**{"--report_to": "none"}))))


def test_hook_placeholders_include_validation_keys() -> None:
    cfg = validate(base(**{"--post_checkpoint_script": "x {validation_guidance} {model_type} {lora_type}"}))
    assert cfg.post_checkpoint_script.startswith("x ")


def test_legacy_names_migrate_to_simpletuner_current_ones() -> None:
    cfg = structure(base(**{"--checkpointing_steps": 7, "--validation_steps": 3, "--save_total_limit": 2,
                            "--hub_private": False, "--vae_cache_preprocess": False}))
    assert (cfg.checkpoint_step_interval, cfg.validation_step_interval, cfg.checkpoints_total_limit) == (7, 3, 2)
    assert cfg.model_card_private is False and cfg.vae_cache_ondemand is True
    errors = errors_of(base(**{"--checkpointing_steps": 7, "--checkpoint_step_interval": 8}))
    assert "old name of checkpoint_step_interval" in errors["checkpointing_steps"].message


def test_an_override_under_another_name_replaces_the_saved_key() -> None:
    from simpletuner_core.config.migrations import overlay

    saved = {"--validation_step_interval": 30, "data_backend_config": "a.json", "--data_backend_config": "a.json"}
    merged = overlay(saved, {"--validation_steps": 12, "--data_backend_config": "b.json"})
    assert merged == {"--validation_steps": 12, "--data_backend_config": "b.json"}
    assert structure(base(**merged)).validation_step_interval == 12


@pytest.mark.parametrize(("overrides", "path", "message"), [
    ({"--aspect_bucket_rounding": 0}, "aspect_bucket_rounding", "must be 1 to 9 (decimal places"),
    ({"--aspect_bucket_rounding": 10}, "aspect_bucket_rounding", "got 10"),
    ({"--minimum_image_size": -0.5}, "minimum_image_size", "must be >= 0 (0 = no minimum); got -0.5"),
])
def test_bucket_keys_are_checked(overrides: dict[str, Any], path: str, message: str) -> None:
    assert message in errors_of(base(**overrides))[path].message


def test_bucket_keys_accept_simpletuner_values() -> None:
    cfg = validate(base(**{"--aspect_bucket_rounding": "3", "--minimum_image_size": "0.5",
                           "--disable_bucket_pruning": "true"}))
    assert (cfg.aspect_bucket_rounding, cfg.minimum_image_size, cfg.disable_bucket_pruning) == (3, 0.5, True)
    assert validate(base(**{"--aspect_bucket_rounding": 9})).aspect_bucket_rounding == 9
