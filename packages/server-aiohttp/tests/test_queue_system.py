"""``/api/system/status``, ``/api/queue/*`` and ``/api/configs/examples`` on a real loopback server.

A job that holds the CPU execution slot is this test process itself (a real, live PID), so submissions queue or
get rejected without spawning trainers.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from aiohttp.test_utils import TestClient

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.processes import start_time
from simpletuner_server.keys import STORE_KEY

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import as_user, call, needs_pixart, serve_as_admin


def _hold_cpu_slot(client: TestClient) -> str:
    store = client.app[STORE_KEY]
    job = m.Job(id="holder-job", config={}, state=m.RUNNING, cpu_slot=True, pid=os.getpid(),
                pid_start_time=start_time(os.getpid()), created_at=time.time(), user="admin")
    store.create_job(job)
    return job.id


def test_system_status_and_allocation(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        status, body, _ = await call(client, "GET", "/api/system/status")
        assert status == 200 and "gpu_allocation" not in body
        assert body["gpu_inventory"]["backend"] in ("cpu", "cuda") and isinstance(body["uptime_seconds"], float)
        assert body["memory_percent"] is None or 0 < body["memory_percent"] <= 100
        status, body, _ = await call(client, "GET", "/api/system/status?include_allocation=true")
        alloc = body["gpu_allocation"]
        assert set(alloc) == {"allocated_gpus", "available_gpus", "running_local_jobs", "devices", "cpu_slot", "workers"}
        assert alloc["cpu_slot"] == {"allocated": False, "job_id": None} and alloc["running_local_jobs"] == 0
        holder = _hold_cpu_slot(client)
        _, body, _ = await call(client, "GET", "/api/system/status?include_allocation=1")
        assert body["gpu_allocation"]["cpu_slot"] == {"allocated": True, "job_id": holder}
        assert body["gpu_allocation"]["running_local_jobs"] == 1
        status, body, _ = await call(client, "GET", "/api/system/status?include_allocation=maybe")
        assert status == 422 and body["error"]["errors"][0]["path"] == "include_allocation"

    serve_as_admin(tmp_path, scenario)


@needs_pixart
def test_queue_submit_stats_and_concurrency(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        status, body, _ = await call(client, "POST", "/api/configs/environments",
                                     json={"name": "queued-env", "example": "tiny-pixart"})
        assert status == 201, body
        status, body, _ = await call(client, "GET", "/api/queue/stats")
        assert status == 200 and body["queue_depth"] == 0 and body["local_job_max_concurrent"] is None
        assert body["local"]["cpu_slot"]["allocated"] is False
        holder = _hold_cpu_slot(client)

        # the CPU slot is taken: no_wait is a 409 whose body still says "rejected", waiting is a 202 "queued"
        status, body, _ = await call(client, "POST", "/api/queue/submit",
                                     json={"config_name": "queued-env", "no_wait": True})
        assert status == 409 and body["status"] == "rejected" and body["success"] is False
        assert "CPU execution slot" in body["error"]["message"] and holder in body["reason"]
        status, body, _ = await call(client, "POST", "/api/queue/submit", json={"config_name": "queued-env"})
        assert status == 202 and body["status"] == "queued" and body["queue_position"] == 1, body
        assert body["success"] is True and body["allocated_gpus"] == []
        queued = body["job_id"]
        _, stats, _ = await call(client, "GET", "/api/queue/stats")
        assert stats["queue_depth"] == 1 and stats["running"] == 1
        assert stats["by_status"] == {"running": 1, "queued": 1} and stats["by_user"] == {"admin": 2}

        for bad, path in (({"config_name": "nope"}, None), ({}, "config_name"),
                          ({"config_name": "../x"}, "config_name"), ({"config_name": "queued-env", "no_wait": "y"},
                                                                     "no_wait"),
                          ({"config_name": "queued-env", "any_gpus": True}, "any_gpus")):
            status, body, _ = await call(client, "POST", "/api/queue/submit", json=bad)
            if path is None:
                assert status == 404 and "'nope' not found" in body["error"]["message"]
            else:
                assert status == 422 and body["error"]["errors"][0]["path"] == path, body

        status, body, _ = await call(client, "POST", "/api/queue/concurrency",
                                     json={"local_gpu_max_concurrent": None, "local_job_max_concurrent": 2})
        assert status == 200 and body["local_job_max_concurrent"] == 2 and body["local_gpu_max_concurrent"] is None
        for bad, path in (({"local_job_max_concurrent": 0}, "local_job_max_concurrent"), ({"local_job_max_concurrent": "2"},
                                                                 "local_job_max_concurrent"),
                          ({"local_jobs_max_concurrent": 2}, "local_jobs_max_concurrent")):
            status, body, _ = await call(client, "POST", "/api/queue/concurrency", json=bad)
            assert status == 422 and body["error"]["errors"][0]["path"] == path, body
        assert (await call(client, "GET", "/api/queue/concurrency"))[1]["local_job_max_concurrent"] == 2

        async with as_user(client, "rita", ["researcher"]) as researcher:
            status, body, _ = await call(researcher, "POST", "/api/queue/concurrency",
                                         json={"local_job_max_concurrent": 5})
            assert status == 403 and "queue.manage" in body["error"]["message"]
            status, body, _ = await call(researcher, "POST", "/api/queue/submit",
                                         json={"config_name": "queued-env", "priority": 5})
            assert status == 403 and "priority" in body["error"]["message"]
            _, stats, _ = await call(researcher, "GET", "/api/queue/stats")
            assert stats["by_user"] == {} and stats["queue_depth"] == 1  # totals, not other users' jobs
        async with as_user(client, "vic", ["viewer"]) as viewer:
            status, _, _ = await call(viewer, "POST", "/api/queue/submit", json={"config_name": "queued-env"})
            assert status == 403
        status, body, _ = await call(client, "POST", "/api/training/cancel", json={"job_id": queued})
        assert status == 200 and body["state"] == "cancelled"

    serve_as_admin(tmp_path, scenario)


@needs_pixart
def test_examples_list_detail_and_create(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        status, body, _ = await call(client, "GET", "/api/configs/examples")
        assert status == 200 and body["count"] == len(body["examples"])
        tiny = next(e for e in body["examples"] if e["name"] == "tiny-pixart")
        assert tiny["defaults"]["model_family"] == "pixart_sigma" and tiny["datasets"] == ["pixart-demo"]
        status, body, _ = await call(client, "GET", "/api/configs/examples/tiny-pixart")
        assert status == 200 and body["dataloader"][0]["instance_data_dir"] == "{datasets_dir}/pixart-demo"
        assert (await call(client, "GET", "/api/configs/examples/nope"))[0] == 404

        status, env, _ = await call(client, "POST", "/api/configs/environments",
                                    json={"name": "from-example", "example": "tiny-pixart", "tags": ["demo"]})
        assert status == 201, env
        assert env["config"]["--model_flavour"] == "tiny"
        assert env["config"]["--output_dir"] == str(tmp_path / "output" / "from-example")
        assert env["dataloader"][0]["instance_data_dir"] == str(tmp_path / "datasets" / "pixart-demo")
        assert env["metadata"]["tags"] == ["demo"]
        status, body, _ = await call(client, "POST", "/api/configs/environments",
                                     json={"name": "from-example", "example": "tiny-pixart"})
        assert status == 409
        status, body, _ = await call(client, "POST", "/api/configs/environments",
                                     json={"name": "x2", "example": "tiny-pixart", "model_family": "flux"})
        assert status == 422 and body["error"]["errors"][0]["path"] == "model_family"
        status, body, _ = await call(client, "POST", "/api/configs/environments", json={"name": "x3"})
        assert status == 422 and body["error"]["errors"][0]["path"] == "model_family"
        status, body, _ = await call(client, "POST", "/api/configs/environments",
                                     json={"name": "examples", "model_family": "pixart_sigma"})
        assert status == 422 and "reserved" in body["error"]["message"]

    serve_as_admin(tmp_path, scenario)
