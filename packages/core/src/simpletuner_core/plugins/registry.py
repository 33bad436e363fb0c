"""Host-owned registries filled through the ``register_*`` hooks, behind a small typed facade.

Application code asks the facade (``get_registry().family("pixart")``), never ``pm.hook.x()`` directly. The
registry is built once per plugin-manager generation; plugins registered or unregistered later are picked up
after :meth:`Registry.refresh` (tests) or :func:`simpletuner_core.plugins.reset_plugin_manager`.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import pluggy

from simpletuner_core import records as r
from simpletuner_core.plugins.manager import get_plugin_manager

T = TypeVar("T")


class RegistryError(LookupError):
    """An unknown or duplicated registry name; the message lists the known names."""


class Table(Generic[T]):
    """Name → record for one kind, with aliases and a did-you-mean on misses."""

    def __init__(self, kind: str, record_type: type[T]) -> None:
        self.kind = kind
        self.record_type = record_type
        self._items: dict[str, T] = {}
        self._owner: dict[str, str] = {}
        self._aliases: dict[str, str] = {}

    def add(self, record: T, owner: str, aliases: Iterable[str] = ()) -> None:
        if not isinstance(record, self.record_type):
            raise RegistryError(
                f"plugin {owner!r} registered {type(record).__name__} as a {self.kind}; "
                f"expected {self.record_type.__name__}"
            )
        name = record.name  # type: ignore[attr-defined]
        for key in (name, *aliases):
            if key in self._items or key in self._aliases:
                first = self._owner.get(key) or self._owner[self._aliases[key]]
                raise RegistryError(f"{self.kind} {key!r} registered twice: by {first!r} and by {owner!r}")
        self._items[name] = record
        self._owner[name] = owner
        for alias in aliases:
            self._aliases[alias] = name

    def canonical(self, name: str) -> str | None:
        if name in self._items:
            return name
        return self._aliases.get(name)

    def get(self, name: str) -> T:
        key = self.canonical(name)
        if key is None:
            raise RegistryError(unknown_message(self.kind, name, self.names()))
        return self._items[key]

    def names(self, with_aliases: bool = False) -> list[str]:
        out = sorted(self._items)
        return sorted([*out, *self._aliases]) if with_aliases else out

    def owner(self, name: str) -> str:
        return self._owner[self.canonical(name) or name]

    def values(self) -> list[T]:
        return [self._items[k] for k in sorted(self._items)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None


def unknown_message(kind: str, name: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(str(name), known, n=1)
    tail = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"unknown {kind} {name!r} (known: {', '.join(known) or 'none'}){tail}"


# hook name -> (table attribute, record type, kind label)
_KINDS: dict[str, tuple[str, type, str]] = {
    "register_model_families": ("families", r.ModelFamily, "model family"),
    "register_config_fields": ("config_fields", r.ConfigField, "config field"),
    "register_adapters": ("adapters", r.AdapterSpec, "lora_type"),
    "register_lora_formats": ("lora_formats", r.LoraFormatSpec, "lora_format"),
    "register_quantizers": ("quantizers", r.QuantizerSpec, "quantizer"),
    "register_data_backends": ("data_backends", r.DataBackendSpec, "data backend type"),
    "register_caption_strategies": ("caption_strategies", r.CaptionStrategySpec, "caption_strategy"),
    "register_optimizers": ("optimizers", r.OptimizerSpec, "optimizer"),
    "register_lr_schedulers": ("schedulers", r.SchedulerSpec, "lr_scheduler"),
    "register_validation_methods": ("validation_methods", r.ValidationMethodSpec, "validation_method"),
    "register_publishers": ("publishers", r.PublisherSpec, "publisher"),
    "register_event_sinks": ("event_sinks", r.EventSinkSpec, "event sink"),
    "register_executors": ("executors", r.ExecutorSpec, "executor"),
    "register_config_examples": ("examples", r.ConfigExample, "example"),
    "register_cli_commands": ("cli_commands", r.CliCommand, "command"),
}


class Registry:
    """Typed view of every registry. Build with :func:`get_registry`."""

    families: Table[r.ModelFamily]
    config_fields: Table[r.ConfigField]
    adapters: Table[r.AdapterSpec]
    lora_formats: Table[r.LoraFormatSpec]
    quantizers: Table[r.QuantizerSpec]
    data_backends: Table[r.DataBackendSpec]
    caption_strategies: Table[r.CaptionStrategySpec]
    optimizers: Table[r.OptimizerSpec]
    schedulers: Table[r.SchedulerSpec]
    validation_methods: Table[r.ValidationMethodSpec]
    publishers: Table[r.PublisherSpec]
    event_sinks: Table[r.EventSinkSpec]
    executors: Table[r.ExecutorSpec]
    examples: Table[r.ConfigExample]
    cli_commands: Table[r.CliCommand]

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.refresh()

    def refresh(self) -> None:
        """Re-run every register hook (after plugins were added or removed)."""
        for hook_name, (attr, record_type, kind) in _KINDS.items():
            table: Table[Any] = Table(kind, record_type)
            impls = getattr(self.pm.hook, hook_name).get_hookimpls()
            plugins = [impl.plugin for impl in impls]  # registration order
            for plugin in plugins:
                owner = self.pm.get_name(plugin) or repr(plugin)

                def register(record: Any, _owner: str = owner, _table: Table[Any] = table) -> None:
                    _table.add(record, _owner, getattr(record, "aliases", ()))

                # Call through pluggy (one plugin at a time) so SIMPLETUNER_TRACE_PLUGINS sees every call.
                others = [p for p in plugins if p is not plugin]
                self.pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
            setattr(self, attr, table)

    def family(self, name: str) -> r.ModelFamily:
        return self.families.get(name)

    def hooks_by_plugin(self) -> dict[str, list[str]]:
        """Plugin name → hook names it implements (for ``simpletuner plugins``)."""
        out: dict[str, list[str]] = {}
        for name, plugin in self.pm.list_name_plugin():
            out[name] = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        return out


_lock = threading.Lock()
_registry: Registry | None = None


def get_registry() -> Registry:
    """The registry for the current plugin manager (built on first use)."""
    global _registry
    pm = get_plugin_manager()
    with _lock:
        if _registry is None or _registry.pm is not pm:
            _registry = Registry(pm)
        return _registry


def reset_registry() -> None:
    global _registry
    with _lock:
        _registry = None
