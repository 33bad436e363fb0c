"""Remote workers' HTTP side: admin routes (``admin_views``), the agents' routes (``worker_views``, ``stream``)
and a housekeeping task that notices silent workers and dispatches queued jobs while any worker exists."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from simpletuner_core.workers import OFFLINE_SETTING, setting, tables
from simpletuner_server.keys import RUNNER_KEY, STORE_KEY
from simpletuner_server.routes_types import Route
from simpletuner_server.workers import admin_views as admin
from simpletuner_server.workers import stream, worker_views

log = logging.getLogger(__name__)
WORKER = r"/api/admin/workers/{worker_id:w-[0-9a-f]+}"
ROUTES: tuple[Route, ...] = (
    ("GET", "/api/admin/workers", admin.list_workers),
    ("POST", "/api/admin/workers", admin.create_worker),
    ("GET", WORKER, admin.get_worker),
    ("DELETE", WORKER, admin.delete_worker),
    ("POST", WORKER + "/drain", admin.drain_worker),
    ("POST", WORKER + "/token", admin.rotate_token),
    ("POST", "/api/workers/register", worker_views.register),
    ("GET", "/api/workers/stream", stream.dispatch_stream),
    ("POST", "/api/workers/heartbeat", worker_views.heartbeat),
    ("POST", "/api/workers/disconnect", worker_views.disconnect),
    ("POST", "/api/workers/job/{job_id}/status", worker_views.job_status),
    ("POST", "/api/workers/job/{job_id}/events", worker_views.job_events),
    ("POST", "/api/workers/job/{job_id}/outputs", worker_views.upload_output),
    ("GET", "/api/workers/files/{sha256:[0-9a-f]{64}}", worker_views.fetch_file),
)


async def housekeeping(app: web.Application) -> AsyncIterator[None]:
    """Every few seconds, while any worker is registered: ``runner.kick`` (offline timeouts, requeues,
    dispatch). Without workers nothing runs, so a plain server behaves as before."""

    async def loop() -> None:
        while True:
            store = app[STORE_KEY]
            interval = max(0.5, min(5.0, float(setting(store, OFFLINE_SETTING)) / 4))
            await asyncio.sleep(interval)
            try:
                if tables.listing(store):
                    await asyncio.to_thread(app[RUNNER_KEY].kick)
            except Exception:  # keep ticking: a transient store error must not end housekeeping
                log.exception("worker housekeeping failed")

    task = asyncio.ensure_future(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup_workers(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
