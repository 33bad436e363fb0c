"""``/api/queue``: statistics, GPU-aware submission of a saved environment, and the admins' concurrency limits.

Unlike the peer server (HTTP 200 with ``success: false``), outcomes are HTTP statuses: 200 running, 202 queued,
404 unknown environment, 409 rejected (the body still carries ``status: "rejected"`` and the reason), 422 invalid.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp import web

from simpletuner_core.config import environments as envs
from simpletuner_core.config.errors import ConfigInvalid
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs import queue
from simpletuner_server import validation as v
from simpletuner_server.api.configs_views import name_check
from simpletuner_server.api.system_views import allocation, worker_gpus
from simpletuner_server.api.training.views import enforce_policy, job_overrides
from simpletuner_server.api_spec import accepts
from simpletuner_server.auth import current_principal, require
from simpletuner_server.keys import RUNNER_KEY, STORE_KEY
from simpletuner_server.middlewares import json_error


@v.check({"type": "string", "description": "auto (a fitting worker, else local), local, worker or an executor"})
def target(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be auto, local, worker or an executor's name"


@v.check({"type": "object", "additionalProperties": {"type": "string"},
          "description": "label -> glob ('*' any run of characters) a worker's labels must match"})
def worker_labels(value: Any) -> str | None:
    ok = isinstance(value, dict) and all(isinstance(k, str) and k and isinstance(x, str) for k, x in value.items())
    return None if ok else "must be an object of label name -> glob string"


SUBMIT = v.Body({"config_name": name_check, "no_wait": v.boolean, "any_gpu": v.boolean,
                 "priority": v.integer(-100, 100), "gpus": v.integer(0, 64), "target": target,
                 "worker_labels": worker_labels}, required=("config_name",))
LIMIT = v.integer(0, 1024, nullable=True)
CONCURRENCY = v.Body({key: LIMIT for key in queue.LIMIT_KEYS}, keep_nulls=True)


def _avg_wait(jobs: list[m.Job]) -> float | None:
    waits = [j.started_at - j.created_at for j in jobs if j.started_at and j.created_at]
    return round(sum(waits) / len(waits), 3) if waits else None


@require("job.view.own")
async def queue_stats(request: web.Request) -> web.Response:
    """Counts by state (and by user, for admins), queue depth, average wait, limits and local allocation."""
    store, principal = request.app[STORE_KEY], current_principal(request)
    jobs = store.list_jobs()
    admin = principal.can("*")
    mine = jobs if admin else [j for j in jobs if j.user == principal.user.username]
    limits = queue.load_limits(store)
    body: dict[str, Any] = {
        "by_status": dict(Counter(j.state for j in mine)),
        "by_user": dict(Counter(j.user or "" for j in mine)),
        "queue_depth": sum(1 for j in jobs if j.state == m.QUEUED),
        "running": sum(1 for j in jobs if j.state in m.ACTIVE_STATES),
        "avg_wait_seconds": _avg_wait(mine),
        **{key: getattr(limits, key) for key in queue.LIMIT_KEYS},
        "local": allocation(request),
        "workers": worker_gpus(request),
    }
    return web.json_response(body)


@accepts(body=SUBMIT, tag="queue")
@require("job.submit")
async def submit(request: web.Request) -> web.Response:
    """Queue the saved environment ``config_name``; it starts now when GPUs (or the CPU slot) are free."""
    body = await v.read_json(request, SUBMIT)
    name = body["config_name"]
    if body.get("priority", 0) > 0 and not current_principal(request).can("queue.manage"):
        raise web.HTTPForbidden(text="Permission denied: queue.manage (only admins may raise a job's priority)")
    runner = request.app[RUNNER_KEY]
    await enforce_policy(request, name, {})
    try:
        result = await asyncio.to_thread(
            runner.submit, env=name, config=job_overrides(request), user=current_principal(request).user.username,
            priority=body.get("priority", 0), gpus=body.get("gpus"), any_gpu=body.get("any_gpu", False),
            no_wait=body.get("no_wait", False), target=body.get("target"), worker_labels=body.get("worker_labels"))
    except ConfigInvalid as exc:
        raise v.InvalidRequest([e.to_dict() for e in exc.errors]) from None
    except ValueError as exc:  # target / worker_labels: the message starts with the field's name
        field, _, message = str(exc).partition(": ")
        raise v.InvalidRequest([{"path": field, "message": message or str(exc)}]) from None
    except envs.EnvironmentError_:
        raise web.HTTPNotFound(text=f"Config {name!r} not found") from None
    if not result.success:
        return json_error(409, f"Job rejected: {result.reason}", extra=result.to_dict())
    return web.json_response(result.to_dict(), status=200 if result.status == "running" else 202)


@require("job.view.own")
async def get_concurrency(request: web.Request) -> web.Response:
    limits = queue.load_limits(request.app[STORE_KEY])
    return web.json_response({key: getattr(limits, key) for key in queue.LIMIT_KEYS})


@accepts(body=CONCURRENCY, tag="queue")
@require("queue.manage")
async def set_concurrency(request: web.Request) -> web.Response:
    """Admins only: change the local limits (``null`` = unlimited); queued jobs that now fit start."""
    values = await v.read_json(request, CONCURRENCY)
    errors = [{"path": key, "message": problem} for key, value in values.items()
              if (problem := queue.limit_error(key, value)) is not None]
    if errors:
        raise v.InvalidRequest(errors)  # each at its field, nothing stored
    limits = queue.set_limits(request.app[STORE_KEY], **values)
    await asyncio.to_thread(request.app[RUNNER_KEY].kick)
    return web.json_response({key: getattr(limits, key) for key in queue.LIMIT_KEYS})
