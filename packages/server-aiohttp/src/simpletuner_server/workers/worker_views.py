"""``/api/workers/*``: what a ``simpletuner worker`` agent calls, with its ``X-Worker-Token``.

A worker sees and reports only its own jobs: another worker's job is a 403, an attempt that was requeued
elsewhere a 409 (the agent drops it). Events are stored once each: every batch carries the agent's local event
ids as ``seq`` and only those above the run's watermark are stored (``tables.ingest``).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from simpletuner_core.jobs import models as m
from simpletuner_core.workers import (
    CONNECTING,
    DRAINING,
    HEARTBEAT_SETTING,
    OFFLINE,
    OFFLINE_SETTING,
    Worker,
    setting,
    tables,
)
from simpletuner_server import validation as v
from simpletuner_server.api_spec import accepts
from simpletuner_server.keys import RUNNER_KEY, STORE_KEY
from simpletuner_server.workers.auth import current_worker
from simpletuner_server.workers.checks import EVENTS, HEARTBEAT, REGISTER, STATUS

OUTPUT_LIMIT = 64 * 2**30  # bytes of one uploaded output file


def _kick(request: web.Request) -> Any:
    return asyncio.to_thread(request.app[RUNNER_KEY].kick)


def _requeue_or_fail(request: web.Request, job: m.Job) -> None:
    """The agent does not have a job the orchestrator gave it: requeue it (or fail it past the retries)."""
    runner = request.app[RUNNER_KEY]
    executor = runner.executors.get("worker")
    if executor is not None and executor.requeue(job) is not None:  # type: ignore[attr-defined]
        return
    reason = f"worker {job.worker_id} no longer runs the job"
    store = request.app[STORE_KEY]
    if store.transition(job.id, m.ACTIVE_STATES, m.FAILED, reason=reason, resumable=True,
                        finished_at=time.time()) is not None:
        from simpletuner_core.events.types import Event

        store.append_event(Event(type="job.failed", job_id=job.id, level="error",
                                 data={"reason": reason, "resumable": True}))


@accepts(body=REGISTER, tag="workers")
async def register(request: web.Request) -> web.Response:
    """Report capabilities; the answer says where the dispatch stream is and which job to resume or drop."""
    worker = current_worker(request)
    body = await v.read_json(request, REGISTER)
    store = request.app[STORE_KEY]
    info = body.get("gpu_info") or {}
    now = time.time()
    held = tables.current_jobs(store).get(worker.id)
    agent_job = body.get("current_job_id")
    resume = held if held and held == agent_job else None
    abandon = agent_job if agent_job and agent_job != held else None
    if held and not resume:
        _requeue_or_fail(request, store.get_job(held))
    status = DRAINING if worker.status == DRAINING else CONNECTING  # a drain survives a reconnect
    tables.update(store, worker.id, status=status, registered_at=now, last_heartbeat=now,
                  gpu_count=body.get("gpu_count", info.get("count", 0)),
                  gpu_name=body.get("gpu_name", info.get("name")),
                  gpu_vram_gb=body.get("gpu_vram_gb", info.get("vram_gb")),
                  accelerator=body.get("accelerator_type", info.get("accelerator")),
                  cpu_count=body.get("cpu_count"), hostname=body.get("hostname"),
                  agent_version=body.get("agent_version"))
    return web.json_response({
        "worker_id": worker.id, "name": worker.name, "worker_type": worker.worker_type, "status": status,
        "sse_url": "/api/workers/stream", "resume_job": resume, "abandon_job": abandon,
        "last_message_id": tables.last_message(store, worker.id),
        "heartbeat_interval": float(setting(store, HEARTBEAT_SETTING)),
        "offline_after": float(setting(store, OFFLINE_SETTING)),
    })


@accepts(body=HEARTBEAT, tag="workers")
async def heartbeat(request: web.Request) -> web.Response:
    """Alive; an offline worker (silent too long, its job requeued) is told to register again."""
    worker = current_worker(request)
    await v.read_json(request, HEARTBEAT)
    store = request.app[STORE_KEY]
    if worker.status == OFFLINE:
        return web.json_response({"status": OFFLINE, "reregister": True})
    tables.update(store, worker.id, last_heartbeat=time.time())
    return web.json_response({"status": worker.status, "reregister": False,
                              "current_job_id": tables.current_jobs(store).get(worker.id)})


async def disconnect(request: web.Request) -> web.Response:
    """Going away (drained, ephemeral done, shut down): offline now; a job it still held is requeued."""
    worker = current_worker(request)
    tables.update(request.app[STORE_KEY], worker.id, status=OFFLINE)
    await _kick(request)
    return web.json_response({"status": OFFLINE})


def _own_job(request: web.Request, worker: Worker, attempt: int | None) -> m.Job:
    store = request.app[STORE_KEY]
    job_id = request.match_info["job_id"]
    try:
        job = store.get_job(job_id)
    except m.JobError:
        raise web.HTTPNotFound(text=f"unknown job {job_id!r}") from None
    runs = tables.runs(store, job.id)
    if not any(r.worker_id == worker.id for r in runs):
        raise web.HTTPForbidden(text=f"job {job_id} was not dispatched to this worker")
    attempt = job.attempts if attempt is None else attempt
    if job.worker_id != worker.id or attempt != job.attempts:
        raise web.HTTPConflict(text=f"job {job_id} attempt {attempt} is no longer this worker's (requeued); "
                                    "drop it")
    return job


@accepts(body=STATUS, tag="workers")
async def job_status(request: web.Request) -> web.Response:
    """``running`` once the trainer runs; a final state (after every event was forwarded) ends the job here."""
    worker = current_worker(request)
    body = await v.read_json(request, STATUS)
    job = _own_job(request, worker, body.get("attempt"))
    store = request.app[STORE_KEY]
    state = body["state"]
    if body.get("outputs") is not None:
        tables.set_outputs(store, job.id, job.attempts, body["outputs"])
    if state == m.RUNNING:
        moved = store.transition(job.id, [m.STARTING], m.RUNNING)
    else:
        from simpletuner_core.events.types import Event

        with store.transaction():
            moved = store.transition(job.id, m.ACTIVE_STATES, state, finished_at=time.time(),
                                     reason=body.get("reason"), resumable=bool(body.get("resumable")))
            if moved is not None and body.get("outputs") is not None:
                store.append_event(Event(type="worker.outputs", job_id=job.id, data={
                    "worker_id": worker.id, "output_dir": body.get("output_dir"), "files": body["outputs"]}))
        await _kick(request)  # the worker is free: dispatch what waits for it
    current = store.get_job(job.id)
    return web.json_response({"job_id": job.id, "state": current.state, "changed": moved is not None})


@accepts(body=EVENTS, tag="workers")
async def job_events(request: web.Request) -> web.Response:
    """Store the batch's events above the watermark, in order; answers the new watermark (``acked``)."""
    worker = current_worker(request)
    body = await v.read_json(request, EVENTS)
    job = _own_job(request, worker, body.get("attempt"))
    store = request.app[STORE_KEY]
    acked = tables.ingest(store, job.id, job.attempts, body["events"])
    tables.update(store, worker.id, last_heartbeat=time.time())
    return web.json_response({"job_id": job.id, "acked": acked})


async def fetch_file(request: web.Request) -> web.StreamResponse:
    """A dataset blob by sha256: only files of jobs dispatched to this worker."""
    worker = current_worker(request)
    found = tables.file_for(request.app[STORE_KEY], worker.id, request.match_info["sha256"])
    if found is None:
        raise web.HTTPNotFound(text="no dataset file with that hash was dispatched to this worker")
    path, size = Path(found[0]), found[1]
    if not path.is_file() or path.stat().st_size != size:
        raise web.HTTPConflict(text="the file changed since the job was dispatched; resubmit the job")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


def _output_target(job: m.Job, relative: str | None) -> Path:
    if not job.output_dir:
        raise web.HTTPConflict(text=f"job {job.id} has no output_dir on this server")
    if not relative or relative.startswith("/") or "\\" in relative or any(
            part in ("", ".", "..") for part in relative.split("/")):
        raise v.InvalidRequest([{"path": "path", "message": "must be a relative path inside the output dir"}])
    root = Path(job.output_dir).expanduser().resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise v.InvalidRequest([{"path": "path", "message": "must stay inside the output dir"}])
    return target


async def upload_output(request: web.Request) -> web.Response:
    """``--worker_upload_outputs``: one final-weights file into the job's output dir here (``?path=REL``)."""
    worker = current_worker(request)
    job = _own_job(request, worker, None)
    target = _output_target(job, request.query.get("path"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    written = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.content.iter_chunked(1 << 20):
                written += len(chunk)
                if written > OUTPUT_LIMIT:
                    raise web.HTTPRequestEntityTooLarge(max_size=OUTPUT_LIMIT, actual_size=written)
                fh.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return web.json_response({"path": str(target), "size": written}, status=201)


upload_output.body_limit = lambda app: OUTPUT_LIMIT  # type: ignore[attr-defined]

