"""A minimal SimpleTuner event reader, written only from SimpleTuner's documented event surface (envelope keys,
types, ``lifecycle.stage`` keys and their ``running`` → ``completed``/``failed`` statuses, ``training.progress``
and ``training.checkpoint`` blocks), with no knowledge of our internal events. Tests feed it what our wires carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import attrs

ENVELOPE = ("id", "type", "severity", "title", "message", "job_id", "timestamp", "images", "videos", "audios",
            "headline", "body", "message_type")
TYPES = ("lifecycle.stage", "training.progress", "training.status", "training.summary", "training.checkpoint",
         "training.validation", "training.metric", "validation.image", "notification", "error", "debug",
         "debug.image")
SEVERITIES = ("info", "success", "warning", "error", "critical")
STAGE_KEYS = ("init_data_backend", "init_load_base_model", "init_prepare_models", "init_resume_checkpoint",
              "init_vae_cache", "checkpoint_save", "model_save", "final_validation", "training_complete",
              "training_abort", "benchmark_base_model")


class NotSimpleTunerShaped(AssertionError):
    pass


@attrs.define
class Run:
    stages: dict[str, list[str]] = attrs.field(factory=dict)  # key -> statuses in order
    unknown_stages: set[str] = attrs.field(factory=set)
    steps: list[int] = attrs.field(factory=list)
    checkpoints: list[str] = attrs.field(factory=list)
    statuses: list[str] = attrs.field(factory=list)
    types: list[str] = attrs.field(factory=list)


def _need(ok: bool, what: str, event: Any) -> None:
    if not ok:
        raise NotSimpleTunerShaped(f"{what}: {str(event)[:500]}")


def read(events: Iterable[dict[str, Any]]) -> Run:
    run = Run()
    open_stages: dict[str, bool] = {}
    for event in events:
        _need(all(key in event for key in ENVELOPE), "envelope keys", event)
        _need(isinstance(event["id"], str), "id is a string", event)
        _need(event["type"] in TYPES and event["message_type"] == event["type"], "type", event)
        _need(event["severity"] in SEVERITIES, "severity", event)
        _need(event["headline"] == event["title"] and event["body"] == event["message"], "headline/body", event)
        _need(all(isinstance(event[k], list) for k in ("images", "videos", "audios")), "media lists", event)
        datetime.fromisoformat(event["timestamp"])
        run.types.append(event["type"])
        if event["type"] == "lifecycle.stage":
            stage = event["stage"]
            key, status = stage["key"], stage["status"]
            _need(status in ("running", "completed", "failed"), "stage status", event)
            _need({"percent", "current", "total"} <= set(stage["progress"]), "stage progress", event)
            if status == "running":
                _need(not open_stages.get(key), f"{key} started twice", event)
                open_stages[key] = True
            else:
                _need(open_stages.get(key, False), f"{key} ended before it ran", event)
                open_stages[key] = False
            run.stages.setdefault(key, []).append(status)
            if key not in STAGE_KEYS:
                run.unknown_stages.add(key)
        elif event["type"] == "training.progress":
            progress = event["progress"]
            _need({"label", "current", "total", "percent", "eta_seconds", "metrics"} <= set(progress),
                  "progress block", event)
            run.steps.append(int(progress["current"]))
        elif event["type"] == "training.checkpoint":
            checkpoint = event["checkpoint"]
            _need({"path", "label", "is_final", "extra"} <= set(checkpoint), "checkpoint block", event)
            run.checkpoints.append(checkpoint["path"])
        elif event["type"] == "training.status":
            run.statuses.append(str(event.get("status")))
    _need(not any(open_stages.values()), f"stages never ended: {open_stages}", None)
    return run
