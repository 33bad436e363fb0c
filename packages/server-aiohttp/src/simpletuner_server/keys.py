"""Typed application and request keys, in their own module so views and middlewares share them."""

from __future__ import annotations

from aiohttp import web

from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import Store
from simpletuner_server.principal import AuthState, Principal
from simpletuner_server.settings import ServerSettings

SETTINGS_KEY: web.AppKey[ServerSettings] = web.AppKey("settings", ServerSettings)
#: The shared SQLite store at ``settings.home / "state.db"``; set while the app runs (see ``store_context``).
STORE_KEY: web.AppKey[Store] = web.AppKey("store", Store)
#: The job runner (one per app, see ``app.runner_context``): submits, spawns trainers, sends commands.
RUNNER_KEY: web.AppKey[Runner] = web.AppKey("runner", Runner)
AUTH_KEY: web.AppKey[AuthState] = web.AppKey("auth", AuthState)
#: Set by the auth middleware on every non-public request; read it through ``auth.current_principal``.
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
