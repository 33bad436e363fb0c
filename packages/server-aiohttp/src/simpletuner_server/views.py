"""Request handlers. Each returns JSON; errors are raised as HTTP exceptions and shaped by middleware."""

from __future__ import annotations

import asyncio

from aiohttp import web

import simpletuner_core
from simpletuner_core.plugins import get_registry
from simpletuner_core.plugins.registry import Table
from simpletuner_server import __version__


async def health(request: web.Request) -> web.Response:
    """Liveness probe: cheap, touches no plugins, so it answers even if a plugin is broken."""
    return web.json_response({"status": "ok", "version": __version__})


async def version(request: web.Request) -> web.Response:
    """Server and core versions, so clients can tell which API they are talking to."""
    return web.json_response({"version": __version__, "core_version": simpletuner_core.__version__})


def _plugin_summary() -> dict[str, list[str]]:
    """Names in every registry table plus the loaded plugins; names only, so no plugin code runs."""
    registry = get_registry()
    out: dict[str, list[str]] = {
        attr: table.names() for attr, table in sorted(vars(registry).items()) if isinstance(table, Table)
    }
    out["plugins"] = [name for name, _ in registry.pm.list_name_plugin()]
    return out


async def plugins(request: web.Request) -> web.Response:
    """What the plugin registry offers; built off the event loop because the first call imports plugins."""
    summary = await asyncio.get_running_loop().run_in_executor(None, _plugin_summary)
    return web.json_response(summary)
