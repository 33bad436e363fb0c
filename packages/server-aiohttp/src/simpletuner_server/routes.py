"""URL table, kept apart from the handlers so the whole API surface is readable in one place."""

from __future__ import annotations

from aiohttp import web

from simpletuner_server import views
from simpletuner_server.api import (
    auth_views,
    configs_views,
    jobs_views,
    queue_views,
    system_views,
    users_views,
)
from simpletuner_server.api import config_fields_views as fields_views
from simpletuner_server.api import registration_views as registration
from simpletuner_server.api.datasets import media as dataset_media
from simpletuner_server.api.datasets import views as datasets_views
from simpletuner_server.api.training import metrics as metrics_views
from simpletuner_server.api.training import outputs as outputs_views
from simpletuner_server.api.training import stream as stream_views
from simpletuner_server.api.training import views as training_views
from simpletuner_server.auth import AUTH_PREFIXES
from simpletuner_server.openapi import setup_docs
from simpletuner_server.routes_types import Route

#: Registered under each of ``AUTH_PREFIXES``; which of them are public is in ``auth.PUBLIC_PATHS``.
AUTH_ROUTES: tuple[Route, ...] = (
    ("GET", "/setup/status", auth_views.setup_status),
    ("POST", "/setup/first-admin", auth_views.first_admin),
    ("POST", "/login", auth_views.login),
    ("POST", "/logout", auth_views.logout),
    ("GET", "/me", auth_views.me),
    ("GET", "/api-keys", auth_views.list_api_keys),
    ("POST", "/api-keys", auth_views.create_api_key),
    ("DELETE", r"/api-keys/{key_id:\d+}", auth_views.revoke_api_key),
    ("GET", "/registration", registration.get_registration),
    ("PUT", "/registration", registration.set_registration),  # admins: checked in the handler (public path)
    ("POST", "/register", registration.register),
)

USER_ROUTES: tuple[Route, ...] = (
    ("GET", "/api/users", users_views.list_users),
    ("POST", "/api/users", users_views.create_user),
    ("GET", r"/api/users/{user_id:\d+}", users_views.get_user),
    ("PUT", r"/api/users/{user_id:\d+}", users_views.update_user),
    ("PATCH", r"/api/users/{user_id:\d+}", users_views.update_user),
    ("DELETE", r"/api/users/{user_id:\d+}", users_views.delete_user),
)

#: Static paths (``active``, ``environments``) before ``{name}``: the first matching resource wins.
CONFIG_NAME = "/api/configs/{name}"
CONFIG_ROUTES: tuple[Route, ...] = (
    ("GET", "/api/configs", configs_views.list_configs),
    ("GET", "/api/configs/", configs_views.list_configs),
    ("POST", "/api/configs/environments", configs_views.create_config),
    ("GET", "/api/configs/active", configs_views.active_config),
    ("GET", "/api/configs/examples", configs_views.list_examples),
    ("GET", "/api/configs/examples/{example}", configs_views.get_example),
    ("GET", "/api/configs/fields", fields_views.config_fields),
    ("GET", CONFIG_NAME, configs_views.get_config),
    ("PUT", CONFIG_NAME, configs_views.update_config),
    ("DELETE", CONFIG_NAME, configs_views.delete_config),
    ("POST", CONFIG_NAME + "/activate", configs_views.activate_config),
    ("GET", CONFIG_NAME + "/export", configs_views.export_config),
    ("GET", CONFIG_NAME + "/effective", configs_views.effective_config),
    ("POST", CONFIG_NAME + "/dataloader", configs_views.save_dataloader),
)

TRAINING_ROUTES: tuple[Route, ...] = (
    ("POST", "/api/training/validate", training_views.validate_config),
    ("POST", "/api/training/start", training_views.start_training),
    ("GET", "/api/training/status", training_views.training_status),
    ("GET", "/api/training/events", training_views.training_events),
    ("GET", "/api/training/events/stream", stream_views.event_stream),  # SSE, or a WebSocket on upgrade
    ("POST", "/api/training/stop", training_views.stop_training),
    ("POST", "/api/training/cancel", training_views.cancel_training),
    ("POST", "/api/training/validation/run", training_views.run_validation),
    ("POST", "/api/training/checkpoint/run", training_views.run_checkpoint),
    ("POST", "/api/training/checkpoints", training_views.list_job_checkpoints),
    ("GET", "/api/training/checkpoints", outputs_views.get_checkpoints),
    ("GET", "/api/training/checkpoints/download", outputs_views.download_checkpoint),
    ("GET", "/api/training/plot", training_views.training_plot),
    ("GET", "/api/training/metrics", metrics_views.training_metrics),
    ("GET", "/api/training/validation/images", outputs_views.validation_images),
    ("GET", "/api/training/files", outputs_views.job_file),
)

JOB_ROUTES: tuple[Route, ...] = (
    ("GET", "/api/jobs", jobs_views.list_jobs),
    ("GET", "/api/jobs/{job_id}", jobs_views.get_job),
)


QUEUE_ROUTES: tuple[Route, ...] = (
    ("GET", "/api/system/status", system_views.system_status),
    ("GET", "/api/queue/stats", queue_views.queue_stats),
    ("POST", "/api/queue/submit", queue_views.submit),
    ("GET", "/api/queue/concurrency", queue_views.get_concurrency),
    ("POST", "/api/queue/concurrency", queue_views.set_concurrency),
)


def setup_routes(app: web.Application) -> None:
    """Register every route."""
    app.router.add_get("/health", views.health, name="health")
    app.router.add_get("/api/version", views.version, name="version")
    app.router.add_get("/api/plugins", views.plugins, name="plugins")
    # Unnamed: consecutive methods on one path share a resource, so a wrong method gets a 405 naming the rest.
    for prefix in AUTH_PREFIXES:
        for method, path, handler in AUTH_ROUTES:
            app.router.add_route(method, prefix + path, handler)
    for method, path, handler in (*USER_ROUTES, *CONFIG_ROUTES, *TRAINING_ROUTES, *JOB_ROUTES, *QUEUE_ROUTES,
                                  *datasets_views.DATASET_ROUTES, *dataset_media.MEDIA_ROUTES):
        app.router.add_route(method, path, handler)
    from simpletuner_server.workers import setup_workers

    setup_workers(app)
    from simpletuner_server.ui import setup_ui

    setup_ui(app)  # the dashboard's pages and assets (HTML, left out of the OpenAPI document)
    setup_docs(app)  # /openapi.json, /docs, /redoc: after every API route, since it documents them
    stream_views.setup_streams(app)  # the open-stream registry and its on_shutdown hook
