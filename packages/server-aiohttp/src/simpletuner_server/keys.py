"""Typed application keys, in their own module so views and middlewares can share them without cycles."""

from __future__ import annotations

from aiohttp import web

from simpletuner_server.settings import ServerSettings

SETTINGS_KEY: web.AppKey[ServerSettings] = web.AppKey("settings", ServerSettings)
