"""``X-Worker-Token`` authentication for ``/api/workers/*`` (the agents' routes; users' credentials never work
there, and worker tokens work nowhere else)."""

from __future__ import annotations

from aiohttp import web

from simpletuner_core.workers import Worker, tables
from simpletuner_server.keys import STORE_KEY

WORKER_PREFIX = "/api/workers/"
HEADER = "X-Worker-Token"
WORKER_KEY: web.RequestKey[Worker] = web.RequestKey("worker", Worker)


def authenticate_worker(request: web.Request) -> Worker:
    """The worker whose current token is presented; 401 for none, a forged, rotated or deleted one."""
    token = (request.headers.get(HEADER) or "").strip()
    if not token:
        raise web.HTTPUnauthorized(text=f"Worker routes need the {HEADER} header",
                                   headers={"WWW-Authenticate": HEADER})
    worker = tables.by_token(request.app[STORE_KEY], token)
    if worker is None:
        raise web.HTTPUnauthorized(text="Invalid, rotated or deleted worker token",
                                   headers={"WWW-Authenticate": HEADER})
    return worker


def current_worker(request: web.Request) -> Worker:
    worker: Worker | None = request.get(WORKER_KEY)
    if worker is None:
        raise web.HTTPUnauthorized(text=f"Worker routes need the {HEADER} header")
    return worker
