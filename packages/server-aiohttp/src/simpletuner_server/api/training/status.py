"""``GET /api/training/status`` in SimpleTuner's shape, folded incrementally from a job's internal events.

SimpleTuner's fields: ``status``, ``config``, ``job_id``, ``job_info``, ``progress``, ``startup_progress``. Ours,
kept for existing clients: ``state`` (the job's own state word, e.g. ``stopped`` or ``queued``), ``stage`` (the
last ``job.stage`` payload) and ``last_event_id``. Torch-free.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from simpletuner_core.events.types import Event
from simpletuner_core.events.wire import STAGE_LABELS
from simpletuner_core.jobs import models as m

#: Our job states -> SimpleTuner's status words (``stopped`` is a graceful cancel; ``state`` keeps the detail).
STATUS_WORDS = {m.QUEUED: "starting", m.STARTING: "starting", m.RUNNING: "running", m.STOPPING: "running",
                m.COMPLETED: "completed", m.FAILED: "error", m.CANCELLED: "cancelled", m.STOPPED: "cancelled"}
IDLE: dict[str, Any] = {"status": "idle", "config": {}, "job_id": None, "job_info": None, "progress": None,
                        "startup_progress": {}, "state": "idle", "stage": None}


@attrs.define
class StatusFold:
    """What ``/status`` needs from one job's events; ``feed`` is called with each new batch, in id order."""

    last_id: int = 0
    stage: dict[str, Any] | None = None
    step: dict[str, Any] | None = None
    steps_per_epoch: int | None = None
    metrics: dict[str, Any] = attrs.field(factory=dict)
    stages: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def feed(self, events: list[Event]) -> None:
        for event in events:
            data = event.data
            if event.type == "job.stage":
                self.stage = dict(data)
                self._stage(data)
            elif event.type == "training.status":
                self.step = dict(data)
            elif event.type == "job.running":
                self.steps_per_epoch = data.get("steps_per_epoch")
            elif event.type == "training.metric":
                if "name" in data and "value" in data:
                    self.metrics[str(data["name"])] = data["value"]
                else:
                    self.metrics.update({k: v for k, v in data.items()
                                         if isinstance(v, (int, float)) and k not in ("step", "total", "epoch")})
            self.last_id = event.id

    def _stage(self, data: dict[str, Any]) -> None:
        key = str(data.get("stage") or "")
        status = str(data.get("status") or "running")
        done = status == "completed"
        self.stages[key] = {"label": data.get("label") or STAGE_LABELS.get(key, key), "progress_type": key,
                            "status": status, "percent": 100 if done else 0, "current": 1 if done else 0,
                            "total": 1}

    def progress(self) -> dict[str, Any] | None:
        """SimpleTuner's ``progress`` block; None before the first optimizer step."""
        if self.step is None:
            return None
        d = self.step
        total = d.get("total")
        epochs = (math.ceil(total / self.steps_per_epoch) if isinstance(total, int) and self.steps_per_epoch
                  else None)
        metrics = {"iterations_per_second": d.get("rate"), "eta_seconds": d.get("eta_seconds"), **self.metrics}
        return {"percent": d.get("percent"), "step": d.get("step"), "total_steps": total, "epoch": d.get("epoch"),
                "total_epochs": epochs, "loss": d.get("loss"), "learning_rate": d.get("lr"),
                "metrics": {k: v for k, v in metrics.items() if v is not None}}


def job_info(job: m.Job) -> dict[str, Any] | None:
    """SimpleTuner's ``job_info`` for a failed job (with the reason when the trainer gave one); else None."""
    if job.state != m.FAILED:
        return None
    detail = "error_with_details" if job.reason else "crashed_without_details"
    message = f"Training failed: {job.reason}" if job.reason else "Training ended without reporting a reason"
    return {"status": "error", "status_detail": detail, "error": job.reason, "message": message}


def status_body(job: m.Job, fold: StatusFold, config: dict[str, Any]) -> dict[str, Any]:
    return {"status": STATUS_WORDS.get(job.state, job.state), "config": config, "job_id": job.id,
            "job_info": job_info(job), "progress": fold.progress(), "startup_progress": dict(fold.stages),
            "state": job.state, "stage": fold.stage, "last_event_id": fold.last_id}
