"""Event envelope and the payload fields of each known event type.

Readers (CLI progress, server streams, webhooks) rely on these names; unknown types pass through untouched, so a
newer trainer never breaks an older reader. ``version`` is bumped when a payload changes incompatibly.
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
    "job.stage": ("stage", "message"),
    "job.plan": ("plan",),
    "training.status": ("step", "total", "epoch", "percent", "loss", "lr", "rate", "eta_seconds"),
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
#: Presentation fields carried at the top level of the wire form (API, streams, webhooks, JSONL), as in
#: SimpleTuner's ``validation.image`` payload; in memory they live in ``data`` like every other field.
LIFTED = ("title", "body", "images", "videos")


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
        """The wire form: envelope fields, ``title``/``body``/``images``/``videos`` (when set) at the top level,
        and the rest of the payload under ``data``."""
        data = {key: value for key, value in self.data.items() if key not in LIFTED}
        lifted = {key: self.data[key] for key in LIFTED if key in self.data}
        return {
            "id": self.id,
            "type": self.type,
            "job_id": self.job_id,
            "timestamp": self.timestamp,
            "level": self.level,
            "version": self.version,
            **lifted,
            "data": data,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        """Inverse of :meth:`to_dict` (also reads the older form with everything under ``data``)."""
        return cls(
            type=str(raw["type"]),
            job_id=str(raw.get("job_id", "")),
            data={**dict(raw.get("data") or {}), **{key: raw[key] for key in LIFTED if key in raw}},
            id=int(raw.get("id", 0)),
            timestamp=float(raw.get("timestamp", 0.0)),
            level=str(raw.get("level", "info")),
            version=int(raw.get("version", EVENT_SCHEMA_VERSION)),
        )
