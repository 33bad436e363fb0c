"""The plugin host: manager, env switches, registries, the typed facade, and the hook meta-tests."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core import hookimpl, hookspecs
from simpletuner_core import records as r
from simpletuner_core.plugins import RegistryError, get_plugin_manager, get_registry
from simpletuner_core.plugins.manager import DEFAULT_PLUGINS

ROOT = Path(__file__).resolve().parents[3]
HOOK_NAMES = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("register_"))


@pytest.fixture(autouse=True)
def fresh(isolated_plugins: Any) -> None:
    isolated_plugins(SIMPLETUNER_DISABLE_PLUGIN_AUTOLOAD="1")


def _noop(*_a: Any, **_k: Any) -> Any:
    return None


class Throwaway:
    """Implements every hook once, so each registry is shown to accept third-party records."""

    @hookimpl
    def register_model_families(self, register: Any) -> None:
        register(r.ModelFamily("toyfam", trainer=lambda: object, aliases=("toy",),
                               flavours={"mini": r.Flavour("mini", "org/toy")}))

    @hookimpl
    def register_config_fields(self, register: Any) -> None:
        register(r.ConfigField("toy_strength", float, 0.5, "How toy it is.", family="toyfam"))

    @hookimpl
    def register_adapters(self, register: Any) -> None:
        register(r.AdapterSpec("toyadapter", _noop))

    @hookimpl
    def register_lora_formats(self, register: Any) -> None:
        register(r.LoraFormatSpec("toyformat", _noop, lambda keys: False))

    @hookimpl
    def register_quantizers(self, register: Any) -> None:
        register(r.QuantizerSpec("int3-toy", _noop))

    @hookimpl
    def register_data_backends(self, register: Any) -> None:
        register(r.DataBackendSpec("toyfs", _noop, _noop))

    @hookimpl
    def register_caption_strategies(self, register: Any) -> None:
        register(r.CaptionStrategySpec("toycaption", _noop))

    @hookimpl
    def register_optimizers(self, register: Any) -> None:
        register(r.OptimizerSpec("toyopt", _noop))

    @hookimpl
    def register_lr_schedulers(self, register: Any) -> None:
        register(r.SchedulerSpec("toysched", _noop))

    @hookimpl
    def register_validation_methods(self, register: Any) -> None:
        register(r.ValidationMethodSpec("toyvalidate", _noop))

    @hookimpl
    def register_publishers(self, register: Any) -> None:
        register(r.PublisherSpec("toypublish", _noop))

    @hookimpl
    def register_event_sinks(self, register: Any) -> None:
        register(r.EventSinkSpec("toysink", _noop))

    @hookimpl
    def register_executors(self, register: Any) -> None:
        register(r.ExecutorSpec("toyexec", _noop))

    @hookimpl
    def register_config_examples(self, register: Any) -> None:
        register(r.ConfigExample("toyexample", "toy", {"--model_family": "toyfam"}, []))

    @hookimpl
    def register_cli_commands(self, register: Any) -> None:
        register(r.CliCommand("toycmd", "toy", _noop, lambda args: 0))


EXPECTED = {
    "register_model_families": ("families", "toyfam"), "register_config_fields": ("config_fields", "toy_strength"),
    "register_adapters": ("adapters", "toyadapter"), "register_lora_formats": ("lora_formats", "toyformat"),
    "register_quantizers": ("quantizers", "int3-toy"), "register_data_backends": ("data_backends", "toyfs"),
    "register_caption_strategies": ("caption_strategies", "toycaption"),
    "register_optimizers": ("optimizers", "toyopt"), "register_lr_schedulers": ("schedulers", "toysched"),
    "register_validation_methods": ("validation_methods", "toyvalidate"),
    "register_publishers": ("publishers", "toypublish"), "register_event_sinks": ("event_sinks", "toysink"),
    "register_cli_commands": ("cli_commands", "toycmd"), "register_executors": ("executors", "toyexec"),
    "register_config_examples": ("examples", "toyexample"),
}


def test_every_hookspec_has_a_test_and_a_docs_entry() -> None:
    """A new hookspec fails here until it has a throwaway-plugin case below and a section in docs/plugins.md."""
    assert sorted(EXPECTED) == HOOK_NAMES
    implemented = {n for n, _ in inspect.getmembers(Throwaway, inspect.isfunction)}
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for name in HOOK_NAMES:
        assert name in implemented, f"hook {name} has no test"
        assert f"`{name}`" in docs, f"hook {name} is not documented in docs/plugins.md"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_each_hook_fills_its_registry_through_a_throwaway_plugin(hook: str) -> None:
    pm = get_plugin_manager()
    plugin = Throwaway()
    pm.register(plugin, name="throwaway")
    try:
        registry = get_registry()
        registry.refresh()
        table_name, record_name = EXPECTED[hook]
        table = getattr(registry, table_name)
        assert record_name in table
        assert table.owner(record_name) == "throwaway"
        assert hook in registry.hooks_by_plugin()["throwaway"]
    finally:
        pm.unregister(plugin)
        get_registry().refresh()
    assert record_name not in getattr(get_registry(), table_name)


def test_builtins_are_plugins_registered_through_the_same_hooks() -> None:
    pm = get_plugin_manager()
    assert [name for name, _ in pm.list_name_plugin()] == list(DEFAULT_PLUGINS)
    registry = get_registry()
    assert {"adamw", "adamw_bf16", "optimi-adamw", "optimi-lion", "prodigy", "adamw8bit"} <= set(
        registry.optimizers.names())
    assert set(registry.schedulers.names()) == {"constant", "constant_with_warmup", "linear", "cosine",
                                                "cosine_with_restarts", "polynomial"}
    assert set(registry.adapters.names()) == {"standard", "lycoris"}
    assert registry.data_backends.owner("local") == "simpletuner_core.builtins.data"


def test_aliases_and_did_you_mean() -> None:
    pm = get_plugin_manager()
    pm.register(Throwaway(), name="throwaway")
    registry = get_registry()
    registry.refresh()
    assert registry.family("toy") is registry.family("toyfam")
    with pytest.raises(RegistryError, match="did you mean 'toyfam'"):
        registry.family("toyfan")
    with pytest.raises(RegistryError, match="unknown optimizer 'adamx'"):
        registry.optimizers.get("adamx")


def test_duplicate_names_name_both_plugins() -> None:
    class Clash:
        @hookimpl
        def register_optimizers(self, register: Any) -> None:
            register(r.OptimizerSpec("adamw", _noop))

    get_plugin_manager().register(Clash(), name="clash")
    with pytest.raises(RegistryError, match=r"'adamw' registered twice: by 'simpletuner_core\.builtins\.optimizers' "
                                            r"and by 'clash'"):
        get_registry().refresh()


def test_wrong_record_type_is_rejected() -> None:
    class Wrong:
        @hookimpl
        def register_optimizers(self, register: Any) -> None:
            register(r.SchedulerSpec("oops", _noop))

    get_plugin_manager().register(Wrong(), name="wrong")
    with pytest.raises(RegistryError, match="expected OptimizerSpec"):
        get_registry().refresh()


def test_records_validate_names() -> None:
    with pytest.raises(ValueError, match="non-empty word"):
        r.OptimizerSpec("has space", _noop)


def _subprocess_registry(env: dict[str, str], code: str) -> str:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("SIMPLETUNER_")} | env
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True)
    return out.stdout.strip()


LIST = ("from simpletuner_core.plugins import get_plugin_manager as g; "
        "print(sorted(n for n, _ in g().list_name_plugin() if not n.startswith('simpletuner_core')))")


def test_entry_points_autoload_and_the_env_switches() -> None:
    everything = _subprocess_registry({}, LIST)
    assert "'pixart'" in everything and "'server'" in everything
    assert _subprocess_registry({"SIMPLETUNER_DISABLE_PLUGIN_AUTOLOAD": "1"}, LIST) == "[]"
    assert _subprocess_registry({"SIMPLETUNER_LOAD_PLUGINS": "pixart"}, LIST) == "['pixart']"
    assert _subprocess_registry({"SIMPLETUNER_LOAD_PLUGINS": ""}, LIST) == "[]"


def test_trace_switch_prints_hook_calls() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMPLETUNER_")}
    env |= {"SIMPLETUNER_TRACE_PLUGINS": "1", "SIMPLETUNER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = subprocess.run([sys.executable, "-c", "from simpletuner_core.plugins import get_registry as g; g()"],
                         env=env, capture_output=True, text=True, check=True)
    assert "register_optimizers" in out.stderr


def test_listing_plugins_and_models_never_imports_torch() -> None:
    code = ("import sys; from simpletuner_core.plugins import get_registry; r = get_registry(); "
            "[f.flavours for f in r.families.values()]; sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
