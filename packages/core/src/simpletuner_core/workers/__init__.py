"""Remote workers: GPU machines that dial in to an orchestrator and run its jobs (``simpletuner worker``).

The orchestrator's side lives in the shared store (:mod:`.tables`), so every process's runner — the server, the
CLI, a trainer kicking the queue — can place jobs on workers and notice lost ones through the ``worker``
executor (:mod:`simpletuner_core.jobs.executors.worker`). The HTTP routes are the server package's; the agent
that runs on the worker is :mod:`simpletuner_core.agent`.

Statuses: ``offline`` (created, or gone: disconnected, drained, or silent for ``worker_offline_after_s``),
``connecting`` (registered, dispatch stream not open yet), ``idle`` (stream open, takes jobs), ``busy`` (idle
with an active job; derived, not stored), ``draining`` (finishes its job, takes no new one, then exits).
"""

from __future__ import annotations

import secrets
from typing import Any

import attrs

OFFLINE, CONNECTING, IDLE, BUSY, DRAINING = "offline", "connecting", "idle", "busy", "draining"
STATUSES = (CONNECTING, IDLE, BUSY, DRAINING, OFFLINE)
WORKER_TYPES = ("persistent", "ephemeral")
TOKEN_PREFIX = "wt_"

#: Store settings (seconds / counts), editable at run time; the defaults are SimpleTuner's.
HEARTBEAT_SETTING, OFFLINE_SETTING, ATTEMPTS_SETTING = ("worker_heartbeat_interval_s", "worker_offline_after_s",
                                                        "worker_max_attempts")
DEFAULTS = {HEARTBEAT_SETTING: 30.0, OFFLINE_SETTING: 120.0, ATTEMPTS_SETTING: 3}


def setting(store: Any, key: str) -> Any:
    value = store.get_setting(key)
    return DEFAULTS[key] if value is None else value


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_worker_id() -> str:
    return "w-" + secrets.token_hex(6)


@attrs.frozen
class Worker:
    id: str
    name: str
    worker_type: str
    labels: dict[str, str]
    status: str  # stored status; see :func:`shown_status` for what listings say
    created_at: float
    gpu_count: int = 0
    gpu_name: str | None = None
    gpu_vram_gb: float | None = None
    accelerator: str | None = None
    cpu_count: int | None = None
    hostname: str | None = None
    agent_version: str | None = None
    registered_at: float | None = None
    last_heartbeat: float | None = None

    def to_dict(self, current_job_id: str | None = None) -> dict[str, Any]:
        """Both spellings SimpleTuner's clients read: its docs' flat fields and its code's ``worker_id`` +
        ``gpu_info``."""
        status = BUSY if self.status == IDLE and current_job_id else self.status
        return {
            "id": self.id, "worker_id": self.id, "name": self.name, "status": status,
            "worker_type": self.worker_type, "labels": dict(self.labels),
            "gpu_count": self.gpu_count, "gpu_name": self.gpu_name, "gpu_vram_gb": self.gpu_vram_gb,
            "accelerator_type": self.accelerator,
            "gpu_info": {"name": self.gpu_name, "vram_gb": self.gpu_vram_gb, "count": self.gpu_count,
                         "accelerator": self.accelerator},
            "cpu_count": self.cpu_count, "hostname": self.hostname, "agent_version": self.agent_version,
            "created_at": self.created_at, "registered_at": self.registered_at,
            "last_heartbeat": self.last_heartbeat, "current_job_id": current_job_id,
        }
