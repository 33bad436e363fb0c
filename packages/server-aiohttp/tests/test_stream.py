"""``/api/training/events/stream`` over real sockets: SSE replay, live events, the end of a job, WebSocket.

No trainer runs: the job and its events are written straight into the app's store.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from simpletuner_core.events.types import Event
from simpletuner_core.jobs.models import Job
from simpletuner_core.jobs.store import Store
from simpletuner_server import create_app
from simpletuner_server.api.training import stream as stream_views
from simpletuner_server.keys import STORE_KEY
from simpletuner_server.settings import ServerSettings

T = TypeVar("T")
ADMIN = {"email": "admin@example.com", "username": "admin", "password": "correct horse battery"}
STREAM = "/api/training/events/stream"


@pytest.fixture(autouse=True)
def fast_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_views, "PING_INTERVAL", 0.2)
    monkeypatch.setattr(stream_views, "WAIT_TIMEOUT", 0.2)


def serve(home: Path, scenario: Callable[[TestClient, Store], Awaitable[T]], login: bool = True) -> T:
    async def main() -> T:
        app = create_app(ServerSettings(home=home), on_setup_token=lambda token: None)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            if login:
                resp = await client.post("/api/cloud/auth/setup/first-admin", json=ADMIN)
                assert resp.status == 201, await resp.text()
            return await asyncio.wait_for(scenario(client, app[STORE_KEY]), 30)

    return asyncio.run(main())


def add_job(store: Store, job_id: str = "job-1", messages: int = 3) -> list[Event]:
    store.create_job(Job(id=job_id, config={}, state="running", user="admin", created_at=time.time()))
    return [log(store, job_id, f"m{i}") for i in range(messages)]


def log(store: Store, job_id: str, message: str) -> Event:
    return store.append_event(Event(type="log", job_id=job_id, data={"message": message}))


async def next_sse(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next SSE message as ``{"id", "event", "data"}`` (comments such as pings counted under ``ping``)."""
    fields: dict[str, Any] = {"ping": 0}
    while True:
        line = (await resp.content.readline()).decode()
        assert line, "stream ended before a complete message"
        line = line.rstrip("\r\n")
        if not line:
            if set(fields) != {"ping"}:
                return fields
            continue
        if line.startswith(":"):
            fields["ping"] += 1
            continue
        name, _, value = line.partition(": ")
        fields[name] = json.loads(value) if name == "data" else value


def test_sse_replay_live_and_end(tmp_path: Path) -> None:
    async def scenario(client: TestClient, store: Store) -> None:
        events = add_job(store)
        resp = await client.get(STREAM, params={"job_id": "job-1"})
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        for event in events:
            got = await next_sse(resp)
            # SimpleTuner's SSE framing: event = the wire type, id = the index, data = the envelope
            assert got["id"] == str(event.id) and got["event"] == "notification"
            assert got["data"] == event.to_dict() and got["data"]["id"] == str(event.id)
            assert got["data"]["event_type"] == "log" and Event.from_dict(got["data"]) == event

        await asyncio.sleep(0.5)  # idle: heartbeats only
        live = log(store, "job-1", "live")
        got = await next_sse(resp)
        assert got["ping"] >= 1 and got["id"] == str(live.id) and got["data"]["data"] == {"message": "live"}

        store.update_job("job-1", state="completed")
        late = log(store, "job-1", "after the end")  # written before the stream notices: still sent
        assert (await next_sse(resp))["id"] == str(late.id)
        end = await next_sse(resp)
        assert end["event"] == "end" and end["data"] == {"job_id": "job-1"}
        assert await resp.content.read() == b""  # closed

        # since_index and Last-Event-ID replay only later ids; the header wins.
        resp = await client.get(STREAM, params={"job_id": "job-1", "since_index": str(events[0].id)})
        assert [(await next_sse(resp))["id"] for _ in range(4)] == [str(e.id) for e in (*events[1:], live, late)]
        assert (await next_sse(resp))["event"] == "end"
        resp = await client.get(STREAM, params={"job_id": "job-1", "since_index": "0"},
                                headers={"Last-Event-ID": str(live.id)})
        assert (await next_sse(resp))["id"] == str(late.id)
        assert (await next_sse(resp))["event"] == "end"

    serve(tmp_path, scenario)


def test_sse_batches_past_the_batch_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_views, "BATCH_EVENTS", 2)

    async def scenario(client: TestClient, store: Store) -> None:
        events = add_job(store, messages=5)
        store.update_job("job-1", state="failed")
        resp = await client.get(STREAM, params={"job_id": "job-1"})
        assert [(await next_sse(resp))["id"] for _ in events] == [str(e.id) for e in events]
        assert (await next_sse(resp))["event"] == "end"

    serve(tmp_path, scenario)


def test_websocket(tmp_path: Path) -> None:
    async def scenario(client: TestClient, store: Store) -> None:
        events = add_job(store)
        async with client.ws_connect(STREAM, params={"job_id": "job-1", "since_index": str(events[0].id)}) as ws:
            frames = [await ws.receive_json() for _ in events[1:]]  # SimpleTuner's {job_id, event} frames
            assert frames == [{"job_id": "job-1", "event": e.to_dict()} for e in events[1:]]
            await ws.send_str("ignored")
            live = log(store, "job-1", "live")
            assert await ws.receive_json() == {"job_id": "job-1", "event": live.to_dict()}
            store.update_job("job-1", state="cancelled")
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.OK
        assert ws.closed

    serve(tmp_path, scenario)


def test_errors(tmp_path: Path) -> None:
    async def scenario(client: TestClient, store: Store) -> None:
        add_job(store)
        resp = await client.get(STREAM, params={"job_id": "nope"})
        assert resp.status == 404 and (await resp.json())["error"]["status"] == 404
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(STREAM, params={"job_id": "nope"})
        assert info.value.status == 404
        for params, headers in (({"job_id": "job-1", "since_index": "x"}, {}),
                                ({"job_id": "job-1"}, {"Last-Event-ID": "-3"})):
            resp = await client.get(STREAM, params=params, headers=headers)
            assert resp.status == 422, await resp.text()

    serve(tmp_path, scenario)


def test_unauthenticated(tmp_path: Path) -> None:
    async def scenario(client: TestClient, store: Store) -> None:
        resp = await client.get(STREAM)
        assert resp.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(STREAM)
        assert info.value.status == 401

    serve(tmp_path, scenario, login=False)


def test_shutdown_closes_open_streams(tmp_path: Path) -> None:
    async def main() -> float:
        app = create_app(ServerSettings(home=tmp_path), on_setup_token=lambda token: None)
        server = TestServer(app, host="127.0.0.1", port=0)
        client = TestClient(server)
        await client.start_server()
        assert (await client.post("/api/cloud/auth/setup/first-admin", json=ADMIN)).status == 201
        add_job(app[STORE_KEY], messages=1)
        sse = await client.get(STREAM, params={"job_id": "job-1"})
        await next_sse(sse)
        ws = await client.ws_connect(STREAM, params={"job_id": "job-1"})
        await ws.receive_json()
        started = time.monotonic()
        await server.close()
        elapsed = time.monotonic() - started
        assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await client.close()
        return elapsed

    assert asyncio.run(main()) < 5
