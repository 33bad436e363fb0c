"""The one plugin manager: specs, built-in plugins, entry points, tracing.

Environment switches:
- ``SIMPLETUNER_DISABLE_PLUGIN_AUTOLOAD=1``: do not load the ``simpletuner`` entry-point group.
- ``SIMPLETUNER_LOAD_PLUGINS=a,b``: load only these entry-point names (empty value: none).
- ``SIMPLETUNER_TRACE_PLUGINS=1``: print every hook call and its result to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from importlib.metadata import entry_points

import pluggy

from simpletuner_core import hookspecs

ENTRY_POINT_GROUP = "simpletuner"

#: Core's own features, registered through the same hooks as any third-party plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "simpletuner_core.builtins.optimizers",
    "simpletuner_core.builtins.schedulers",
    "simpletuner_core.builtins.data",
    "simpletuner_core.builtins.adapters",
    "simpletuner_core.builtins.lora_formats",
    "simpletuner_core.builtins.quantizers",
    "simpletuner_core.builtins.validation",
    "simpletuner_core.builtins.events",
    "simpletuner_core.builtins.executors",
    "simpletuner_core.builtins.publishers",
    "simpletuner_core.builtins.commands",
    "simpletuner_core.builtins.jobs_commands",
    "simpletuner_core.builtins.worker_command",
)

_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    if _truthy(os.environ.get("SIMPLETUNER_DISABLE_PLUGIN_AUTOLOAD")):
        return
    only = os.environ.get("SIMPLETUNER_LOAD_PLUGINS")
    wanted = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if wanted is not None and ep.name not in wanted:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        module = ep.load()
        pm.register(module, name=ep.name)
        pm._plugin_distinfo.append((module, ep.dist))  # lets list_plugin_distinfo() report versions


def _make() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for dotted in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(dotted), name=dotted)
    _load_entry_points(pm)
    pm.check_pending()
    if _truthy(os.environ.get("SIMPLETUNER_TRACE_PLUGINS")):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"[plugins] {msg}"))
        pm.enable_tracing()
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, creating it on first use."""
    global _pm
    with _lock:
        if _pm is None:
            _pm = _make()
        return _pm


def reset_plugin_manager() -> None:
    """Forget the manager and every registry built from it (tests; after changing env switches)."""
    global _pm
    from simpletuner_core.plugins import registry

    with _lock:
        _pm = None
    registry.reset_registry()
