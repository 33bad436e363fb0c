"""Application factory in the aiohttp-demos "polls" layout: settings → routes → middlewares."""

from __future__ import annotations

from aiohttp import web

from simpletuner_server.keys import SETTINGS_KEY
from simpletuner_server.middlewares import setup_middlewares
from simpletuner_server.routes import setup_routes
from simpletuner_server.settings import ServerSettings

__all__ = ["SETTINGS_KEY", "create_app"]


def create_app(settings: ServerSettings | None = None) -> web.Application:
    """Build the app; a factory (not a module global) so tests and the CLI each get a fresh one."""
    settings = settings if settings is not None else ServerSettings.from_env()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS_KEY] = settings
    setup_routes(app)
    setup_middlewares(app)
    return app
