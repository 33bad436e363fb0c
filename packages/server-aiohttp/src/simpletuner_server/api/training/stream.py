"""``GET /api/training/events/stream``: a job's events live, as Server-Sent Events or over a WebSocket.

The job is resolved exactly as ``/api/training/events`` does it (``job_id``, else the caller's current job; 404 /
422 alike). Replay starts after ``Last-Event-ID`` (SSE) or ``since_index``; new events are long-polled with
``Store.wait_events`` on a worker thread, at most ``BATCH_EVENTS`` per read, so one subscriber never holds the loop
or a store transaction. Every event goes out in its wire form (SimpleTuner's envelope, ``events/wire.py``): as
SSE ``event:`` = its wire type, ``id:`` = its index and ``data:`` = the envelope; over the WebSocket as
``{"job_id", "event"}`` frames. Once the job is final and every event has been sent, SSE sends ``event: end`` and both
kinds close. Open streams are registered on the app and closed by an ``on_shutdown`` hook, so the server stops
promptly instead of waiting for subscribers.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, web
from aiohttp_sse import sse_response

from simpletuner_core.events.types import Event
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.store import Store
from simpletuner_server import validation as v
from simpletuner_server.api.training import views as tv
from simpletuner_server.auth import require
from simpletuner_server.keys import STORE_KEY

#: Seconds between SSE heartbeat comments (``: ping``); tests lower it.
PING_INTERVAL = 15.0
#: Seconds one ``wait_events`` call blocks a worker thread; also how soon a final state without a new event is
#: noticed and how long shutdown may wait for a worker thread to return.
WAIT_TIMEOUT = 1.0
#: The most events read per batch and subscriber.
BATCH_EVENTS = 200


class _Stream:
    """One open subscriber; ``close()`` (from shutdown or a client disconnect) ends its loop at the next wait."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def close(self) -> None:
        self.closed.set()


STREAMS_KEY: web.AppKey[weakref.WeakSet[_Stream]] = web.AppKey("event_streams", weakref.WeakSet)


async def close_streams(app: web.Application) -> None:
    """``on_shutdown``: end every open stream so the server need not wait for them."""
    for stream in list(app[STREAMS_KEY]):
        stream.close()


def setup_streams(app: web.Application) -> None:
    app[STREAMS_KEY] = weakref.WeakSet()
    app.on_shutdown.append(close_streams)


def _start_after(request: web.Request, header: str | None) -> int:
    """The event id to replay after: the ``Last-Event-ID`` header when given, else ``since_index`` (0)."""
    since = v.query_int(request.query, "since_index", 0, 0, 2**62)
    raw = request.headers.get(header) if header else None
    if raw is None or not raw.strip():
        return since
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 2**62:
        raise v.InvalidRequest([{"path": header, "message": "must be a non-negative integer event id"}])
    return value


async def _follow(request: web.Request, job: m.Job, after: int, stream: _Stream,
                  send: Callable[[Event], Awaitable[None]]) -> bool:
    """Send the job's events after ``after`` until the job is final (True) or the stream is closed (False)."""
    store: Store = request.app[STORE_KEY]
    closed = asyncio.ensure_future(stream.closed.wait())
    try:
        while not stream.closed.is_set():
            # State first, then events: an event written before the final transition is always read after it.
            final = store.get_job(job.id).state in m.FINAL_STATES
            if final:
                batch = store.read_events(job.id, after_id=after, limit=BATCH_EVENTS)
            else:
                waiting = asyncio.ensure_future(
                    asyncio.to_thread(store.wait_events, job.id, after, WAIT_TIMEOUT, BATCH_EVENTS))
                await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()  # the worker thread itself returns within WAIT_TIMEOUT
                    return False
                batch = waiting.result()
            for event in batch:
                await send(event)
            if batch:
                after = batch[-1].id
            if final and len(batch) < BATCH_EVENTS:
                return True
        return False
    finally:
        closed.cancel()


async def _sse(request: web.Request, job: m.Job | None, after: int, stream: _Stream) -> web.StreamResponse:
    async with sse_response(request, ping_interval=PING_INTERVAL) as sse:
        async def send(event: Event) -> None:
            if not sse.is_connected():
                stream.close()
                return
            wire = event.to_dict()
            await sse.send(json.dumps(wire), id=wire["id"], event=wire["type"])

        try:
            finished = job is None or await _follow(request, job, after, stream, send)
            if finished:
                await sse.send(json.dumps({"job_id": job.id if job else None}), event="end")
        except ConnectionResetError:
            pass
    return sse


async def _websocket(request: web.Request, ws: web.WebSocketResponse, job: m.Job | None, after: int,
                     stream: _Stream) -> web.WebSocketResponse:
    await ws.prepare(request)

    async def drain() -> None:
        async for _ in ws:  # client messages are ignored; the loop ends when the client closes
            pass
        stream.close()

    async def send(event: Event) -> None:
        await ws.send_str(json.dumps({"job_id": event.job_id, "event": event.to_dict()}))

    reader = asyncio.ensure_future(drain())
    try:
        finished = job is None or await _follow(request, job, after, stream, send)
        await ws.close(code=WSCloseCode.OK if finished else WSCloseCode.GOING_AWAY)
    except ConnectionResetError:
        pass
    finally:
        reader.cancel()
    return ws


@require("job.view.own")
async def event_stream(request: web.Request) -> web.StreamResponse:
    """SSE by default; a WebSocket when the client asks to upgrade. Same job rules as ``training_events``."""
    ws = web.WebSocketResponse()
    upgrade = ws.can_prepare(request).ok
    after = _start_after(request, None if upgrade else "Last-Event-ID")
    job = tv.chosen_job(request)
    stream = _Stream()
    request.app[STREAMS_KEY].add(stream)
    if upgrade:
        return await _websocket(request, ws, job, after, stream)
    return await _sse(request, job, after, stream)
