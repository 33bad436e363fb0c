"""Application factory in the aiohttp-demos "polls" layout: settings → routes → middlewares → contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import SQLiteStore
from simpletuner_server.auth import auth_context
from simpletuner_server.keys import AUTH_KEY, RUNNER_KEY, SETTINGS_KEY, STORE_KEY
from simpletuner_server.middlewares import setup_middlewares
from simpletuner_server.principal import AuthState, log_setup_token
from simpletuner_server.routes import setup_routes
from simpletuner_server.settings import ServerSettings
from simpletuner_server.workers import housekeeping

__all__ = ["AUTH_KEY", "SETTINGS_KEY", "STORE_KEY", "create_app"]


async def store_context(app: web.Application) -> AsyncIterator[None]:
    """Open the shared store at ``home/state.db`` (running migrations) for the app's lifetime; it is opened
    on the loop thread, whose connection is the one request handlers use and the one closed here."""
    store = SQLiteStore(app[SETTINGS_KEY].home / "state.db")
    app[STORE_KEY] = store
    try:
        yield
    finally:
        store.close()


async def runner_context(app: web.Application) -> AsyncIterator[None]:
    """One job runner for the app's lifetime (devices: the saved inventory, else discovered); trainers it
    spawned keep running when the server stops. At start, jobs whose trainer died meanwhile become failed."""
    runner = Runner(app[STORE_KEY], home=app[SETTINGS_KEY].home)
    runner.reconcile()
    app[RUNNER_KEY] = runner
    yield


def create_app(settings: ServerSettings | None = None,
               on_setup_token: Callable[[str], None] = log_setup_token) -> web.Application:
    """Build the app; a factory (not a module global) so tests and the CLI each get a fresh one.

    ``on_setup_token`` receives the one-time first-admin setup token at startup when no admin exists (the
    CLI prints it; by default it is logged). The store opens at startup, not here: building touches no disk.
    """
    settings = settings if settings is not None else ServerSettings.from_env()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS_KEY] = settings
    app[AUTH_KEY] = AuthState(on_setup_token=on_setup_token)
    setup_routes(app)
    setup_middlewares(app)
    app.cleanup_ctx.append(store_context)
    app.cleanup_ctx.append(auth_context)  # after the store: it reads it
    app.cleanup_ctx.append(runner_context)  # after the store: it uses it
    app.cleanup_ctx.append(housekeeping)  # after the runner: it kicks it while remote workers exist
    return app
