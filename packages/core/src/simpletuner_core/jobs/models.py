"""Job records and their states. Torch-free: the server, the CLI and trainer processes all read these."""

from __future__ import annotations

import secrets
import time
from typing import Any

import attrs

QUEUED = "queued"  # waiting for resources (see ``reason`` and the queue position)
STARTING = "starting"  # resources allocated, trainer process being spawned
RUNNING = "running"
STOPPING = "stopping"  # stop requested; the trainer finishes the step and checkpoints
COMPLETED = "completed"
STOPPED = "stopped"  # stopped gracefully with a checkpoint: resumable
CANCELLED = "cancelled"
FAILED = "failed"

ACTIVE_STATES = (STARTING, RUNNING, STOPPING)
TARGETS = ("auto", "local", "worker")  # or an executor's own name (see jobs/executors)
FINAL_STATES = (COMPLETED, STOPPED, CANCELLED, FAILED)
ALL_STATES = (QUEUED, *ACTIVE_STATES, *FINAL_STATES)


def new_job_id() -> str:
    """Sortable by submission time, unique enough across processes: ``20261122-101500-a1b2c3``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class JobError(LookupError):
    """Unknown job, or a command that does not apply to the job's state; the message says which."""


@attrs.frozen
class Job:
    id: str
    config: dict[str, Any]  # the resolved wire-format config the trainer runs
    state: str = QUEUED
    env: str | None = None  # environment name, when submitted from one
    user: str | None = None
    priority: int = 0  # higher runs first; ties by submission order
    gpus_requested: int = 0  # 0 = a CPU job (runs in the CPU execution slot)
    device_ids: tuple[int, ...] = ()  # specific GPUs asked for (empty: any ``gpus_requested`` GPUs)
    any_gpu: bool = False  # ignore ``device_ids`` and take any free GPUs
    allocated_gpus: tuple[int, ...] = ()
    cpu_slot: bool = False  # holds the CPU execution slot
    pid: int | None = None
    pid_start_time: float | None = None  # the process's start time, to detect PID reuse
    reason: str | None = None  # queue reason while queued; failure reason when failed
    resumable: bool = False
    output_dir: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    target: str = "auto"  # auto: a remote executor that fits now, else local; local; worker; an executor name
    worker_labels: dict[str, str] = attrs.field(factory=dict)  # label -> glob a remote worker must match
    executor: str | None = None  # the executor that took the job (set at admission)
    worker_id: str | None = None  # the remote worker / node running it, for remote executors
    attempts: int = 0  # times it was requeued after its worker was lost

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["device_ids"] = list(self.device_ids)
        data["allocated_gpus"] = list(self.allocated_gpus)
        return data
