"""``/api/system/status``: host load and memory, the accelerator inventory and who holds what.

Read from ``/proc`` and the runner's device inventory: no psutil, no NVML call per request (the inventory is
discovered once per runner), so the route stays cheap enough to poll.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from simpletuner_core.jobs import models as m
from simpletuner_server.api_spec import BOOLEAN, Query, accepts
from simpletuner_server.auth import require
from simpletuner_server.keys import RUNNER_KEY, STORE_KEY
from simpletuner_server.validation import flag

STARTED_AT = time.time()
STATUS_QUERY = Query({"include_allocation": BOOLEAN})


def _memory_percent() -> float | None:
    """Used memory as a percentage of total, from ``/proc/meminfo`` (None where it does not exist)."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh if line.split()[1:]}
    except (OSError, ValueError, IndexError):
        return None
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if not total or available is None:
        return None
    return round(100.0 * (total - available) / total, 1)


def _load_avg_5min() -> float | None:
    try:
        return round(os.getloadavg()[1], 2)
    except (OSError, AttributeError):
        return None


def allocation(request: web.Request) -> dict[str, Any]:
    """Which GPUs (and the CPU execution slot) the active jobs hold; the tutorial's ``gpu_allocation``."""
    runner, store = request.app[RUNNER_KEY], request.app[STORE_KEY]
    runner.reconcile()
    active = store.list_jobs(states=m.ACTIVE_STATES)
    holder = {gpu: job.id for job in active for gpu in job.allocated_gpus}
    cpu_job = next((job.id for job in active if job.cpu_slot), None)
    devices = [{"index": d.index, "name": d.name, "memory_gb": d.memory_gb, "allocated": d.index in holder,
                "job_id": holder.get(d.index)} for d in runner.devices]
    return {
        "allocated_gpus": sorted(holder),
        "available_gpus": [d.index for d in runner.devices if d.index not in holder],
        "running_local_jobs": len(active),
        "devices": devices,
        "cpu_slot": {"allocated": cpu_job is not None, "job_id": cpu_job},
    }


def worker_gpus(request: web.Request) -> list[dict[str, Any]]:
    """Remote workers' (and cluster nodes') accelerators and who holds them (``/api/admin/workers`` has the rest)."""
    from simpletuner_server.workers.admin_views import all_workers

    keys = ("id", "name", "status", "worker_type", "gpu_count", "gpu_name", "gpu_vram_gb", "accelerator_type",
            "labels", "current_job_id")
    return [{key: w.get(key) for key in keys} for w in all_workers(request)]


@accepts(query=STATUS_QUERY, tag="system")
@require("api.access")
async def system_status(request: web.Request) -> web.Response:
    """Uptime, 5-minute load, memory use, GPUs; ``include_allocation=true`` adds ``gpu_allocation``."""
    devices = request.app[RUNNER_KEY].devices
    body: dict[str, Any] = {
        "timestamp": time.time(),
        "uptime_seconds": round(time.time() - STARTED_AT, 1),
        "load_avg_5min": _load_avg_5min(),
        "memory_percent": _memory_percent(),
        "cpu_count": os.cpu_count(),
        "gpus": [{"index": d.index, "name": d.name, "memory_gb": d.memory_gb} for d in devices],
        "gpu_inventory": {"backend": "cuda" if devices else "cpu", "count": len(devices)},
    }
    if flag(request.query, "include_allocation"):
        body["gpu_allocation"] = {**allocation(request), "workers": worker_gpus(request)}
    return web.json_response(body)
