"""Event envelope and the payload fields of each known event type.

In memory and in the job store events keep these internal names; every wire (API, streams, webhooks, the
JSONL mirror) carries SimpleTuner's envelope instead (``events/wire.py``), with the internal name as its
``event_type``. Readers rely on these names; unknown types pass through untouched, so a newer trainer never
breaks an older reader. ``version`` is bumped when a payload changes incompatibly.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

EVENT_SCHEMA_VERSION = 1

#: type -> payload keys the trainer always sets (readers may rely on them).
EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "job.queued": (),
    "job.started": ("pid", "config_hash"),
    "job.running": ("step", "total", "steps_per_epoch", "seed", "message"),
    "job.stage": ("stage", "status", "label", "message"),
    "job.plan": ("plan",),
    "training.status": ("step", "total", "epoch", "percent", "loss", "lr", "rate", "eta_seconds"),
    "training.summary": ("step", "total", "epochs", "final_loss", "mean_loss", "seconds", "output_dir"),
    "training.metric": ("step", "metrics"),  # {"eval_loss": x}: evaluation results at an optimizer step
    "checkpoint.saved": ("step", "path"),
    "validation.started": ("step",),
    "validation.image": ("title", "body", "step", "global_step", "prompt", "validation_type", "resolution",
                         "images"),
    "hook.script": ("hook", "argv", "returncode", "timed_out", "seconds", "output", "background", "message"),
    "publish.completed": ("publisher", "kind", "step", "path", "remote", "seconds"),
    "publish.failed": ("publisher", "kind", "step", "path", "error", "message"),
    "job.completed": ("step", "output_dir"),
    "job.failed": ("reason", "resumable"),
    "job.cancelled": ("step",),
    "job.stopped": ("step", "checkpoint"),
    "log": ("message",),
}

LEVELS = ("debug", "info", "warning", "error")


@attrs.frozen
class Event:
    type: str
    job_id: str
    data: dict[str, Any] = attrs.field(factory=dict)
    id: int = 0
    timestamp: float = attrs.field(factory=time.time)
    level: str = "info"
    version: int = EVENT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The wire form every reader outside the trainer sees: SimpleTuner's envelope
        (:func:`simpletuner_core.events.wire.to_wire`)."""
        from simpletuner_core.events.wire import to_wire

        return to_wire(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        """Inverse of :meth:`to_dict`; also reads the older internal form (``type`` = our type, payload under
        ``data``, with or without ``title``/``body``/``images``/``videos`` at the top level) of existing logs."""
        from simpletuner_core.events.wire import from_wire

        return from_wire(raw)
