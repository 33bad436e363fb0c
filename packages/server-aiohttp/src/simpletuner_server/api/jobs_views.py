"""``/api/jobs``: every job the caller may see, newest first, and one job in full, for dashboards.

Visibility is the training routes' rule (``api.training.views._sees``): admins see every job, everyone else only
their own, and another user's job is a 404 rather than a 403 so its existence is not revealed. Progress comes
from each job's newest ``training.status`` event only (one indexed read per job), never from replaying its log.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from aiohttp import web

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.store import Store
from simpletuner_server import validation as v
from simpletuner_server.api.training import views as tv
from simpletuner_server.api_spec import Query, accepts
from simpletuner_server.auth import current_principal, iso, require
from simpletuner_server.keys import STORE_KEY

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
LIST_QUERY = Query({
    "state": {"type": "string", "description": "comma-separated job states: " + ", ".join(m.ALL_STATES)},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    "offset": {"type": "integer", "minimum": 0, "default": 0},
})


def _progress(store: Store, job_id: str) -> dict[str, Any] | None:
    """``{step, total_steps, percent, epoch, loss, learning_rate, iterations_per_second, eta_seconds}`` from the
    newest ``training.status`` event; None before one."""
    newest = store.read_events_of_types(job_id, ["training.status"], limit=1, newest_first=True)
    if not newest:
        return None
    data = newest[0].data
    step, total, percent = data.get("step"), data.get("total"), data.get("percent")
    if percent is None and isinstance(step, int) and isinstance(total, int) and total > 0:
        percent = round(100 * step / total, 2)
    return {"step": step, "total_steps": total, "percent": _finite(percent), "epoch": data.get("epoch"),
            "loss": _finite(data.get("loss")), "learning_rate": _finite(data.get("lr")),
            "iterations_per_second": _finite(data.get("rate")), "eta_seconds": _finite(data.get("eta_seconds"))}


def _stage(store: Store, job_id: str) -> dict[str, Any] | None:
    """The newest ``job.stage`` payload (``{stage, status, label, message}``), None before one."""
    newest = store.read_events_of_types(job_id, ["job.stage"], limit=1, newest_first=True)
    return dict(newest[0].data) if newest else None


def _finite(value: Any) -> float | int | None:
    """A diverged run's NaN loss would make the answer invalid JSON for browsers: null instead."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def _duration(job: m.Job, now: float) -> float | None:
    """finished - started; now - started while the job is active; None before it started."""
    if job.started_at is None:
        return None
    if job.finished_at is not None:
        return round(max(0.0, job.finished_at - job.started_at), 3)
    return round(max(0.0, now - job.started_at), 3) if job.state in m.ACTIVE_STATES else None


def job_entry(store: Store, job: m.Job, now: float) -> dict[str, Any]:
    """One job as the list and the job page show it (no config: it can be large and secret-bearing)."""
    return {
        "job_id": job.id, "env": job.env, "user": job.user, "state": job.state,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
        "duration_seconds": _duration(job, now), "gpus_requested": job.gpus_requested,
        "allocated_gpus": list(job.allocated_gpus), "cpu_slot": job.cpu_slot, "executor": job.executor,
        "worker_id": job.worker_id, "target": job.target, "priority": job.priority,
        "queue_position": store.queue_position(job.id) if job.state == m.QUEUED else None,
        "reason": job.reason, "resumable": job.resumable, "output_dir": job.output_dir,
        "progress": _progress(store, job.id),
    }


def _states(raw: str | None) -> tuple[str, ...] | None:
    """The ``state`` filter; None (every state) when absent or empty; 422 naming any unknown state."""
    if raw is None:
        return None
    states = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [state for state in states if state not in m.ALL_STATES]
    if unknown:
        raise v.InvalidRequest([{"path": "state", "message": f"unknown state {', '.join(map(repr, unknown))}; "
                                                             f"expected any of: {', '.join(m.ALL_STATES)}"}])
    return states or None


def _page(store: Store, states: tuple[str, ...] | None, user: str | None, limit: int,
          offset: int) -> dict[str, Any]:
    jobs = store.list_jobs(states=states, user=user)  # oldest first
    jobs.reverse()
    now = time.time()
    entries = [job_entry(store, job, now) for job in jobs[offset:offset + limit]]
    return {"jobs": entries, "count": len(entries), "total": len(jobs)}


@accepts(query=LIST_QUERY)
@require("job.view.own")
async def list_jobs(request: web.Request) -> web.Response:
    """Jobs you may see (every job for admins), newest first, with state, timing, resources and progress.

    ``{"jobs": [{job_id, env, user, state, created_at, started_at, finished_at, duration_seconds, gpus_requested,
    allocated_gpus, cpu_slot, executor, worker_id, target, priority, queue_position, reason, resumable,
    output_dir, progress: {step, total_steps, percent, epoch, loss, learning_rate, iterations_per_second,
    eta_seconds} | null}], "count", "total"}``; ``total`` counts every
    match before ``offset``/``limit``.
    """
    states = _states(request.query.get("state"))
    limit = v.query_int(request.query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = v.query_int(request.query, "offset", 0, 0, 2**62)
    principal = current_principal(request)
    user = None if principal.can("*") else principal.user.username
    tv._runner(request).reconcile()  # a trainer that died shows as failed, not running forever
    return web.json_response(await asyncio.to_thread(_page, request.app[STORE_KEY], states, user, limit, offset))


@require("job.view.own")
async def get_job(request: web.Request) -> web.Response:
    """One job in full: the list's entry plus its config (secrets hidden from non-owners), ``stage`` (the newest
    ``job.stage`` payload) and ``last_event_id``."""
    tv._runner(request).reconcile()
    job = tv._job(request, request.match_info["job_id"])
    store, config = request.app[STORE_KEY], tv._shown_config(request, job)

    def read() -> dict[str, Any]:
        return {**job_entry(store, job, time.time()), "config": config, "stage": _stage(store, job.id),
                "last_event_id": store.last_event_id(job.id)}

    return web.json_response(await asyncio.to_thread(read))
