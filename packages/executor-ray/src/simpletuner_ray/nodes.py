"""Ray nodes as the server's workers, and the resources a job asks of each node. Pure: no Ray import here."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.executors import labels_match


def per_machine(job: m.Job) -> tuple[int, float, float]:
    """(machines, CPUs, GPUs) per machine: one CPU per trainer process, the job's GPUs on every machine."""
    machines = max(1, int(job.config.get("--num_machines") or 1))
    processes = max(1, int(job.config.get("--num_processes") or 1))
    return machines, float(processes), float(job.gpus_requested)


def user_labels(node: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (node.get("Labels") or {}).items()}


def matching(nodes: Sequence[Mapping[str, Any]], wanted: Mapping[str, str]) -> list[Mapping[str, Any]]:
    return [n for n in nodes if n.get("Alive") and labels_match(wanted, user_labels(n))]


def selector(nodes: Sequence[Mapping[str, Any]], wanted: Mapping[str, str]) -> dict[str, str]:
    """A Ray label selector equal to the globs on today's nodes: each glob becomes ``in(values that match)``."""
    out: dict[str, str] = {}
    for key in wanted:
        values = sorted({user_labels(n)[key] for n in nodes})
        out[key] = values[0] if len(values) == 1 else f"in({','.join(values)})"
    return out


def worker_dict(node: Mapping[str, Any], current_job: str | None) -> dict[str, Any]:
    """One node in the admin workers listing's shape (both field spellings the remote-worker API serves)."""
    resources = node.get("Resources") or {}
    gpus = int(resources.get("GPU", 0))
    labels = user_labels(node)
    gpu_name = labels.get("ray.io/accelerator-type") or (node.get("Resources") or {}).get("accelerator_type")
    alive = bool(node.get("Alive"))
    status = "offline" if not alive else ("busy" if current_job else "idle")
    node_id = str(node.get("NodeID"))
    return {"id": node_id, "worker_id": node_id, "name": str(node.get("NodeName") or node.get("NodeManagerAddress")),
            "status": status, "ray_state": node.get("State") or ("ALIVE" if alive else "DEAD"),
            "worker_type": "ray", "gpu_count": gpus, "gpu_name": gpu_name if isinstance(gpu_name, str) else None,
            "gpu_vram_gb": None, "gpu_info": {"count": gpus, "name": gpu_name if isinstance(gpu_name, str) else None,
                                              "vram_gb": None, "accelerator": "cuda" if gpus else None},
            "cpu_count": resources.get("CPU", 0), "labels": labels,
            "last_heartbeat": time.time() if alive else None,  # Ray's GCS holds it alive as of now
            "current_job_id": current_job}
