"""``/api/admin/workers``: admins register remote workers, see them, drain, delete and rotate their tokens.

A token (``wt_…``) is shown once, at creation or rotation; only its sha256 is stored, and a rotated token stops
working at once (open dispatch streams close on their next poll).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from simpletuner_core.jobs.executors import listed_workers
from simpletuner_core.workers import DRAINING, OFFLINE, WORKER_TYPES, Worker, tables
from simpletuner_server import validation as v
from simpletuner_server.api_spec import accepts
from simpletuner_server.auth import require
from simpletuner_server.keys import RUNNER_KEY, STORE_KEY
from simpletuner_server.workers.checks import CREATE

PERMISSION = "admin.workers"


def _worker(request: web.Request) -> Worker:
    worker = tables.get(request.app[STORE_KEY], request.match_info["worker_id"])
    if worker is None:
        raise web.HTTPNotFound(text=f"unknown worker {request.match_info['worker_id']!r}")
    return worker


def _json(request: web.Request, worker: Worker) -> dict[str, Any]:
    return worker.to_dict(tables.current_jobs(request.app[STORE_KEY]).get(worker.id))


def all_workers(request: web.Request) -> list[dict[str, Any]]:
    """Registered workers, then the nodes of any cluster executor enabled in this server (``worker_type: ray``)."""
    store = request.app[STORE_KEY]
    jobs = tables.current_jobs(store)
    registered = [w.to_dict(jobs.get(w.id)) for w in tables.listing(store)]
    seen = {w["id"] for w in registered}
    nodes = [w for w in listed_workers(request.app[RUNNER_KEY].executors) if w.get("id") not in seen]
    return [*registered, *nodes]


@require(PERMISSION)
async def list_workers(request: web.Request) -> web.Response:
    """Every worker: status, GPUs, labels, last heartbeat and current job (both field spellings)."""
    return web.json_response({"workers": all_workers(request)})


@accepts(body=CREATE, tag="workers")
@require(PERMISSION)
async def create_worker(request: web.Request) -> web.Response:
    """Register a worker; the answer carries its token (``wt_…``) this once."""
    body = await v.read_json(request, CREATE)
    worker_type = body.get("worker_type") or ("ephemeral" if body.get("persistent") is False else "persistent")
    if worker_type not in WORKER_TYPES:
        raise v.InvalidRequest([{"path": "worker_type", "message": f"must be one of {', '.join(WORKER_TYPES)}"}])
    try:
        worker, token = tables.create(request.app[STORE_KEY], body["name"].strip(), worker_type,
                                      body.get("labels", {}))
    except tables.DuplicateWorkerError as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    return web.json_response({**worker.to_dict(), "token": token}, status=201)


@require(PERMISSION)
async def get_worker(request: web.Request) -> web.Response:
    return web.json_response(_json(request, _worker(request)))


@require(PERMISSION)
async def delete_worker(request: web.Request) -> web.Response:
    """Only an offline worker can be deleted (drain it first); its token dies with it."""
    worker = _worker(request)
    if worker.status != OFFLINE:
        raise web.HTTPConflict(text=f"worker {worker.name!r} is {worker.status}; drain it and wait until it is "
                                    "offline before deleting it")
    tables.delete(request.app[STORE_KEY], worker.id)
    return web.json_response({"deleted": True, "worker_id": worker.id})


@require(PERMISSION)
async def drain_worker(request: web.Request) -> web.Response:
    """The worker finishes its current job, takes no new one, then its agent disconnects and exits."""
    worker = _worker(request)
    store = request.app[STORE_KEY]
    if worker.status == OFFLINE:
        raise web.HTTPConflict(text=f"worker {worker.name!r} is offline: nothing to drain")
    with store.transaction():
        tables.update(store, worker.id, status=DRAINING)
        tables.post(store, worker.id, "drain")
    return web.json_response(_json(request, _worker(request)))


@require(PERMISSION)
async def rotate_token(request: web.Request) -> web.Response:
    """A new token, shown once; the old one is refused from now on."""
    worker = _worker(request)
    token = tables.rotate(request.app[STORE_KEY], worker.id)
    return web.json_response({"worker_id": worker.id, "id": worker.id, "name": worker.name, "token": token})
