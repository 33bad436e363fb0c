"""``GET /api/workers/stream``: the worker's dispatch stream (SSE): ``job_submit``, ``job_command``,
``job_abandon`` and ``drain`` messages, each with its id, replayed after ``Last-Event-ID`` like the training
stream. Commands users post for the worker's jobs (stop, cancel, validate, checkpoint) are moved from the
store's command queue into the stream here, in one transaction each, so every command is delivered at least
once and, by id, applied once. The stream ends when the token is rotated, the worker deleted or offline.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp_sse import sse_response

from simpletuner_core.jobs import models as m
from simpletuner_core.workers import CONNECTING, HEARTBEAT_SETTING, IDLE, OFFLINE, setting, tables
from simpletuner_server.api.training.stream import STREAMS_KEY, _Stream
from simpletuner_server.keys import RUNNER_KEY, STORE_KEY
from simpletuner_server.workers.auth import current_worker

POLL = 0.2  # seconds between looks at the worker's messages; dispatch latency is bounded by it
MAX_PING = 15.0


def _after(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("since") or "0"
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        from simpletuner_server.validation import InvalidRequest

        raise InvalidRequest([{"path": "Last-Event-ID", "message": "must be a non-negative integer message id"}])
    return value


def _forward_commands(store: object, worker_id: str) -> None:
    for job in store.list_jobs(states=m.ACTIVE_STATES):  # type: ignore[attr-defined]
        if job.worker_id != worker_id or not tables.has_commands(store, job.id):  # a read: no lock per poll
            continue
        with store.transaction():  # type: ignore[attr-defined]
            for command in store.take_commands(job.id):  # type: ignore[attr-defined]
                tables.post(store, worker_id, "job_command", job_id=job.id, attempt=job.attempts, command=command)


async def dispatch_stream(request: web.Request) -> web.StreamResponse:
    """Dispatch stream (SSE) of this worker; opening it makes a registered worker ``idle`` (it takes jobs)."""
    worker = current_worker(request)
    after = _after(request)
    store = request.app[STORE_KEY]
    token = tables.token_hash(store, worker.id)
    if worker.status == OFFLINE:
        raise web.HTTPConflict(text="register first (POST /api/workers/register)")
    if worker.status == CONNECTING:
        tables.update(store, worker.id, status=IDLE)
        await asyncio.to_thread(request.app[RUNNER_KEY].kick)  # queued jobs may fit it now
    stream = _Stream()
    request.app[STREAMS_KEY].add(stream)
    ping = min(MAX_PING, float(setting(store, HEARTBEAT_SETTING)))
    async with sse_response(request, ping_interval=ping) as sse:
        try:
            while not stream.closed.is_set() and sse.is_connected():
                current = tables.get(store, worker.id)
                if current is None or current.status == OFFLINE or tables.token_hash(store, worker.id) != token:
                    break
                _forward_commands(store, worker.id)
                for message_id, kind, data in tables.messages(store, worker.id, after):
                    await sse.send(json.dumps({"type": kind, **data}), id=str(message_id), event=kind)
                    after = message_id
                try:
                    await asyncio.wait_for(stream.closed.wait(), POLL)
                except asyncio.TimeoutError:
                    pass
        except ConnectionResetError:
            pass
    return sse
