"""URL table, kept apart from the handlers so the whole API surface is readable in one place."""

from __future__ import annotations

from aiohttp import web

from simpletuner_server import views


def setup_routes(app: web.Application) -> None:
    """Register every route; the full job API arrives with the server issue."""
    app.router.add_get("/health", views.health, name="health")
    app.router.add_get("/api/version", views.version, name="version")
    app.router.add_get("/api/plugins", views.plugins, name="plugins")
