"""Plugin manager and the typed facade over the host-owned registries."""

from simpletuner_core.plugins.manager import DEFAULT_PLUGINS, get_plugin_manager, reset_plugin_manager
from simpletuner_core.plugins.registry import Registry, RegistryError, get_registry

__all__ = ["DEFAULT_PLUGINS", "Registry", "RegistryError", "get_plugin_manager", "get_registry",
           "reset_plugin_manager"]
