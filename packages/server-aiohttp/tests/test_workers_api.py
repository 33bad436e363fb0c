"""The workers' HTTP API on a real loopback server: admin routes, worker-token auth, ownership, validation."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.store import SQLiteStore
from simpletuner_core.workers import tables

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import as_user, call, serve_as_admin


async def _worker(client: TestClient, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    status, body, _ = await call(client, "POST", "/api/admin/workers", json={"name": name, "labels": labels or {}})
    assert status == 201, body
    return body


def _as(token: str) -> dict[str, str]:
    return {"X-Worker-Token": token}


REGISTER = {"gpu_count": 0, "gpu_name": None, "gpu_vram_gb": None, "accelerator_type": "cpu", "cpu_count": 2,
            "gpu_info": {"name": None, "vram_gb": None, "count": 0, "accelerator": "cpu"}}


def test_admin_routes_tokens_once_and_hashed(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        made = await _worker(client, "gpu-box", {"gpu_type": "a100-80g", "team": "nlp"})
        assert made["token"].startswith("wt_") and made["worker_id"] == made["id"] and made["status"] == "offline"
        status, listed, _ = await call(client, "GET", "/api/admin/workers")
        entry = listed["workers"][0]
        assert status == 200 and "token" not in entry
        assert set(entry) >= {"id", "name", "status", "worker_type", "gpu_count", "gpu_name", "gpu_vram_gb", "labels",
                              "last_heartbeat", "current_job_id", "worker_id", "gpu_info"}
        raw = sqlite3.connect(tmp_path / "state.db").execute("SELECT token_hash FROM workers").fetchone()[0]
        assert made["token"] not in raw and len(raw) == 64
        assert (await call(client, "POST", "/api/admin/workers", json={"name": "GPU-BOX"}))[0] == 409
        status, body, _ = await call(client, "POST", "/api/admin/workers", json={"name": "x", "labels": {"a b": 1}})
        assert status == 422 and body["error"]["errors"][0]["path"] == "labels"
        status, body, _ = await call(client, "POST", "/api/admin/workers", json={"name": "x", "worker_type": "big"})
        assert status == 422 and body["error"]["errors"][0]["path"] == "worker_type"
        async with as_user(client, "res", ["researcher"]) as researcher:
            async with researcher.get("/api/admin/workers") as resp:
                assert resp.status == 403
        status, spec, _ = await call(client, "GET", "/openapi.json")
        assert "workers" in {t["name"] for t in spec["tags"]}
        assert spec["paths"]["/api/admin/workers"]["get"]["tags"] == ["workers"]
        assert spec["paths"]["/api/admin/workers"]["get"]["x-permission"] == "admin.workers"
        assert spec["paths"]["/api/workers/register"]["post"]["security"] == [{"workerToken": []}]

    serve_as_admin(tmp_path, scenario)


def test_worker_auth_registration_validation_rotation_drain_delete(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        made = await _worker(client, "box")
        token, worker_id = made["token"], made["worker_id"]
        assert (await call(client, "POST", "/api/workers/register", json=REGISTER))[0] == 401
        forged = "wt_" + "A" * 43
        assert (await call(client, "POST", "/api/workers/register", json=REGISTER, headers=_as(forged)))[0] == 401
        status, key, _ = await call(client, "POST", "/api/cloud/auth/api-keys", json={"name": "k"})
        headers = {"X-API-Key": key["key"]}
        assert (await call(client, "POST", "/api/workers/register", json=REGISTER, headers=headers))[0] == 401
        for bad, path in (({"gpu_count": "two"}, "gpu_count"), ({"gpu_count": -1}, "gpu_count"),
                          ({"gpu_info": {"count": 1, "colour": "red"}}, "gpu_info"), ({"nope": 1}, "nope"),
                          ({"gpu_vram_gb": "big"}, "gpu_vram_gb")):
            status, body, _ = await call(client, "POST", "/api/workers/register", json=bad, headers=_as(token))
            assert status == 422 and body["error"]["errors"][0]["path"] == path, body
        status, body, _ = await call(client, "POST", "/api/workers/register", data=b"{", headers=_as(token))
        assert status == 400
        _, listed, _ = await call(client, "GET", f"/api/admin/workers/{worker_id}")
        assert listed["status"] == "offline" and listed["registered_at"] is None  # nothing stored

        status, reg, _ = await call(client, "POST", "/api/workers/register", json=REGISTER, headers=_as(token))
        assert status == 200 and reg["worker_id"] == worker_id and reg["sse_url"] == "/api/workers/stream"
        assert reg["resume_job"] is None and reg["abandon_job"] is None and reg["heartbeat_interval"] == 30.0
        _, listed, _ = await call(client, "GET", f"/api/admin/workers/{worker_id}")
        assert listed["status"] == "connecting" and listed["gpu_info"]["accelerator"] == "cpu"
        assert (await call(client, "DELETE", f"/api/admin/workers/{worker_id}"))[0] == 409  # online

        async with client.get("/api/workers/stream", headers=_as(token)) as stream:
            assert stream.status == 200
            await asyncio.sleep(0.3)
            _, listed, _ = await call(client, "GET", f"/api/admin/workers/{worker_id}")
            assert listed["status"] == "idle"
            status, drained, _ = await call(client, "POST", f"/api/admin/workers/{worker_id}/drain")
            assert status == 200 and drained["status"] == "draining"
            line = b""
            while not line.startswith(b"data:"):
                line = await asyncio.wait_for(stream.content.readline(), 10)
            assert json.loads(line[5:])["type"] == "drain"  # drain reaches the agent

        status, rotated, _ = await call(client, "POST", f"/api/admin/workers/{worker_id}/token")
        assert status == 200 and rotated["token"] != token
        assert (await call(client, "POST", "/api/workers/heartbeat", json={}, headers=_as(token)))[0] == 401
        new = _as(rotated["token"])
        status, beat, _ = await call(client, "POST", "/api/workers/heartbeat", json={}, headers=new)
        assert status == 200 and beat["reregister"] is False
        assert (await call(client, "POST", "/api/workers/disconnect", json={}, headers=new))[0] == 200
        status, beat, _ = await call(client, "POST", "/api/workers/heartbeat", json={}, headers=new)
        assert beat["reregister"] is True
        assert (await call(client, "DELETE", f"/api/admin/workers/{worker_id}"))[0] == 200
        assert (await call(client, "POST", "/api/workers/heartbeat", json={}, headers=new))[0] == 401
        assert (await call(client, "DELETE", f"/api/admin/workers/{worker_id}"))[0] == 404

    serve_as_admin(tmp_path, scenario)


def test_a_worker_reports_only_its_own_jobs_and_events_are_stored_once(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        a, b = await _worker(client, "a"), await _worker(client, "b")
        blob = tmp_path / "img.png"
        blob.write_bytes(b"pixels")
        sha = "a" * 64
        store = SQLiteStore(tmp_path / "state.db")
        store.create_job(m.Job(id="j1", config={}, state=m.STARTING, executor="worker", worker_id=a["worker_id"],
                               created_at=time.time()))
        tables.start_run(store, "j1", 0, a["worker_id"], [(sha, str(blob), 6)])
        status, reg, _ = await call(client, "POST", "/api/workers/register", headers=_as(a["token"]),
                                    json={**REGISTER, "current_job_id": "j1"})
        assert status == 200 and reg["resume_job"] == "j1" and reg["abandon_job"] is None
        status, reg, _ = await call(client, "POST", "/api/workers/register", headers=_as(b["token"]),
                                    json={**REGISTER, "current_job_id": "stale"})
        assert status == 200 and reg["abandon_job"] == "stale"  # not b's job: the agent drops it
        ha, hb = _as(a["token"]), _as(b["token"])
        status, body, _ = await call(client, "POST", "/api/workers/job/j1/status", json={"state": "running"},
                                     headers=hb)
        assert status == 403, body
        assert (await call(client, "POST", "/api/workers/job/j1/events", json={"events": []}, headers=hb))[0] == 403
        assert (await call(client, "POST", "/api/workers/job/nope/status", json={"state": "running"},
                           headers=ha))[0] == 404
        status, body, _ = await call(client, "POST", "/api/workers/job/j1/status",
                                     json={"state": "running", "attempt": 3}, headers=ha)
        assert status == 409  # a stale attempt
        status, body, _ = await call(client, "POST", "/api/workers/job/j1/status", json={"state": "sleeping"},
                                     headers=ha)
        assert status == 422 and body["error"]["errors"][0]["path"] == "state"
        batch = {"attempt": 0, "events": [{"seq": 5, "type": "log", "data": {"message": "one"}},
                                          {"seq": 9, "type": "log", "data": {"message": "two"}}]}
        for _ in range(2):  # the answer was lost: the agent sends the batch again
            status, acked, _ = await call(client, "POST", "/api/workers/job/j1/events", json=batch, headers=ha)
            assert status == 200 and acked["acked"] == 9
        assert [e.data["message"] for e in store.read_events("j1")] == ["one", "two"]
        status, body, _ = await call(client, "POST", "/api/workers/job/j1/events",
                                     json={"events": [{"seq": 0, "type": "log"}]}, headers=ha)
        assert status == 422
        async with client.get(f"/api/workers/files/{sha}", headers=ha) as resp:
            assert resp.status == 200 and await resp.read() == b"pixels"
        async with client.get(f"/api/workers/files/{sha}", headers=hb) as resp:
            assert resp.status == 404  # not dispatched to b
        async with client.get(f"/api/workers/files/{'b' * 64}", headers=ha) as resp:
            assert resp.status == 404
        status, body, _ = await call(client, "POST", "/api/workers/job/j1/status", headers=ha,
                                     json={"state": "completed", "outputs": [{"path": "w.bin", "size": 3}]})
        assert status == 200 and body["state"] == "completed"
        assert tables.run(store, "j1", 0).outputs == [{"path": "w.bin", "size": 3}]
        assert store.read_events("j1")[-1].type == "worker.outputs"

        # a job the agent no longer has when it registers again goes back to the queue, as an event
        store.create_job(m.Job(id="j2", config={}, state=m.RUNNING, executor="worker", worker_id=a["worker_id"],
                               created_at=time.time()))
        tables.start_run(store, "j2", 0, a["worker_id"], [])
        status, reg, _ = await call(client, "POST", "/api/workers/register", json=REGISTER, headers=ha)
        assert reg["resume_job"] is None
        requeued = store.get_job("j2")
        assert (requeued.state, requeued.attempts, requeued.worker_id) == ("queued", 1, None)
        assert [e.type for e in store.read_events("j2")] == ["job.requeued"]
        store.close()

    serve_as_admin(tmp_path, scenario)
