"""The wire form of an event: SimpleTuner's envelope, so its receivers (dashboards, webhook consumers, scripts)
read our API, streams, webhooks and JSONL mirror without knowing our internal event names. Torch-free.

Every internal :class:`Event` becomes one envelope (its ``id`` is the event's index, so resuming by id works on
every wire). SimpleTuner's fields come first; ``data`` holds our full payload (less the media lists, which sit at
the top level); ``event_type``, ``level``, ``version`` and ``unix_timestamp`` are our extras, which make
:func:`from_wire` exact. ``docs/events.md`` has the table of what each internal type becomes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from simpletuner_core.events.types import EVENT_SCHEMA_VERSION, Event

#: SimpleTuner's event types.
WIRE_TYPES = ("lifecycle.stage", "training.progress", "training.status", "training.summary", "training.checkpoint",
              "training.validation", "training.metric", "validation.image", "notification", "error", "debug",
              "debug.image")
#: SimpleTuner's ``lifecycle.stage`` keys, in the order a run reaches them.
STAGE_KEYS = ("init_data_backend", "init_load_base_model", "benchmark_base_model", "init_vae_cache",
              "init_prepare_models", "init_resume_checkpoint", "checkpoint_save", "final_validation", "model_save",
              "training_complete", "training_abort")
#: Our stages SimpleTuner has no key for (documented in docs/events.md); readers treat them like any other.
EXTRA_STAGE_KEYS = ("init_text_embed_cache",)
STAGE_LABELS = {
    "init_data_backend": "Planning the dataset",
    "init_load_base_model": "Loading the base model",
    "benchmark_base_model": "Benchmarking the base model",
    "init_vae_cache": "Caching VAE latents",
    "init_text_embed_cache": "Caching text embeds",
    "init_prepare_models": "Preparing the models",
    "init_resume_checkpoint": "Resuming from a checkpoint",
    "checkpoint_save": "Saving a checkpoint",
    "final_validation": "Final validation",
    "model_save": "Saving the final model",
    "training_complete": "Training complete",
    "training_abort": "Stopping training",
}
STAGE_STATUSES = ("running", "completed", "failed")
#: Internal lifecycle event -> the ``status`` word of its ``training.status`` envelope (``stopped`` is a
#: graceful, resumable cancel: SimpleTuner's word for it is ``cancelled``; ``event_type`` tells them apart).
STATUS_WORDS = {"job.queued": "queued", "job.started": "starting", "job.running": "running",
                "job.completed": "completed", "job.failed": "error", "job.cancelled": "cancelled",
                "job.stopped": "cancelled"}
MEDIA = ("images", "videos", "audios")
_SEVERITY = {"debug": "info", "info": "info", "warning": "warning", "error": "error", "critical": "critical"}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(data: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in data.items() if isinstance(v, (str, int, float)))[:500]


# --- one builder per internal type: (wire type, severity or None for the level's, title, message, blocks) ------

Built = tuple[str, str | None, str, str, dict[str, Any]]


def _stage(d: Mapping[str, Any]) -> Built:
    key = str(d.get("stage") or "")
    status = str(d.get("status") or "running")
    label = str(d.get("label") or STAGE_LABELS.get(key, key))
    percent = 100 if status == "completed" else 0
    block = {"key": key, "status": status, "label": label,
             "progress": {"percent": percent, "current": 1 if status == "completed" else 0, "total": 1},
             "metadata": {k: v for k, v in d.items() if k not in ("stage", "status", "label")}}
    severity = {"completed": "success", "failed": "error"}.get(status, "info")
    return "lifecycle.stage", severity, f"{label}: {status}", str(d.get("message") or ""), {"stage": block}


def _progress(d: Mapping[str, Any]) -> Built:
    step, total = d.get("step"), d.get("total")
    metrics = {"loss": d.get("loss"), "learning_rate": d.get("lr"), "epoch": d.get("epoch"),
               "iterations_per_second": d.get("rate")}
    block = {"label": f"Step {step}/{total}", "current": step, "total": total, "percent": d.get("percent"),
             "eta_seconds": d.get("eta_seconds"), "metrics": {k: v for k, v in metrics.items() if v is not None}}
    loss = d.get("loss")
    message = f"loss {loss:.4f}" if _num(loss) else ""
    return "training.progress", None, f"Step {step}/{total}", message, {"progress": block}


def _status(kind: str) -> Callable[[Mapping[str, Any]], Built]:
    word = STATUS_WORDS[kind]
    titles = {"queued": "Training queued", "starting": "Training starting", "running": "Training running",
              "completed": "Training completed", "error": "Training failed", "cancelled": "Training cancelled"}

    def build(d: Mapping[str, Any]) -> Built:
        title = "Training stopped" if kind == "job.stopped" else titles[word]
        if d.get("step") is not None:
            title += f" at step {d['step']}"
        message = str(d.get("reason") or d.get("message") or d.get("output_dir") or d.get("checkpoint") or "")
        severity = {"completed": "success", "error": "error", "cancelled": "warning"}.get(word, "info")
        return "training.status", severity, title, message, {"status": word}
    return build


def _summary(d: Mapping[str, Any]) -> Built:
    loss = d.get("final_loss")
    message = f"final loss {loss:.4f}" if _num(loss) else ""
    return "training.summary", "success", f"Training summary: {d.get('step')} steps", message, {}


def _checkpoint(d: Mapping[str, Any]) -> Built:
    path = str(d.get("path") or "")
    block = {"path": path, "label": f"checkpoint-{d.get('step')}", "is_final": bool(d.get("final", False)),
             "extra": {k: v for k, v in d.items() if k not in ("path", "final")}}
    return ("training.checkpoint", "success", f"Checkpoint saved at step {d.get('step')}", path,
            {"checkpoint": block})


def _assets(items: Any, kind: str, path: Any) -> list[dict[str, Any]]:
    """``{url, kind, alt}`` per image/video/audio. The media themselves travel once, in the top-level lists: an
    asset points at a remote ``url`` when the item has one, else at the saved file (``file://``), and repeats an
    inline ``data:`` URL only when neither exists (an unsaved preview)."""
    out = []
    for item in items or []:
        entry = item if isinstance(item, Mapping) else {"src": item}
        url = entry.get("url") or (f"file://{path}" if path else entry.get("src"))
        out.append({"url": url, "kind": kind, "alt": entry.get("alt")})
    return out


def _validation(kind: str) -> Callable[[Mapping[str, Any]], Built]:
    def build(d: Mapping[str, Any]) -> Built:
        if kind == "validation.started":
            title = f"Validation started at step {d.get('step')}"
        else:
            title = str(d.get("title") or f"Validation at step {d.get('step')}")
        extra = {k: v for k, v in d.items() if k not in (*MEDIA, "title", "body", "prompt", "score")}
        block = {"title": title, "prompt": d.get("prompt"), "score": d.get("score"),
                 "assets": _assets(d.get("images"), "image", d.get("path")) + _assets(d.get("videos"), "video", None)
                 + _assets(d.get("audios"), "audio", None), "extra": extra}
        wire = "training.validation" if kind == "validation.started" else "validation.image"
        return wire, None, title, str(d.get("body") or d.get("prompt") or ""), {"validation": block}
    return build


def metric_values(d: Mapping[str, Any]) -> dict[str, Any]:
    """A ``training.metric`` payload's values by name: ``{name, value}``, flat numbers beside ``step``, and/or a
    ``metrics`` map (every reader of metrics, the wire and the server's charts, reads them this one way)."""
    if "name" in d and "value" in d:
        metrics = {str(d["name"]): d["value"]}
    else:
        metrics = {k: v for k, v in d.items() if _num(v) and k not in ("step", "total", "epoch")}
    if isinstance(d.get("metrics"), Mapping):
        metrics.update({str(k): v for k, v in d["metrics"].items()})
    return metrics


def _metric(d: Mapping[str, Any]) -> Built:
    """``{name, value}`` or ``{<metric>: value, ...}`` plus ``step``: readers get a ``progress.metrics`` map."""
    metrics = metric_values(d)
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    block = {"label": f"Metrics at step {d.get('step')}", "current": d.get("step"), "total": d.get("total"),
             "percent": None, "eta_seconds": None, "metrics": metrics}
    return "training.metric", None, f"Metrics at step {d.get('step')}", shown, {"progress": block}


def _notice(title: str) -> Callable[[Mapping[str, Any]], Built]:
    def build(d: Mapping[str, Any]) -> Built:
        return "notification", None, title, str(d.get("message") or d.get("error") or _text(d)), {}
    return build


def _publish_done(d: Mapping[str, Any]) -> Built:
    return ("notification", "success", f"Published {d.get('kind')} (step {d.get('step')})",
            str(d.get("remote") or ""), {})


def _log(d: Mapping[str, Any]) -> Built:
    return "notification", None, "Log", str(d.get("message") or ""), {}


def _plan(d: Mapping[str, Any]) -> Built:
    return "debug", "info", "Dataset plan", "", {}


BUILDERS: dict[str, Callable[[Mapping[str, Any]], Built]] = {
    "job.stage": _stage,
    "job.plan": _plan,
    "training.status": _progress,
    "training.summary": _summary,
    "training.metric": _metric,
    "checkpoint.saved": _checkpoint,
    "validation.started": _validation("validation.started"),
    "validation.image": _validation("validation.image"),
    "hook.script": _notice("Hook script"),
    "publish.completed": _publish_done,
    "publish.failed": _notice("Publishing failed"),
    "log": _log,
    **{kind: _status(kind) for kind in STATUS_WORDS},
}


def to_wire(event: Event) -> dict[str, Any]:
    """SimpleTuner's envelope for ``event``; unknown internal types become a ``notification``."""
    data = dict(event.data)
    build = BUILDERS.get(event.type, _notice(event.type))
    kind, severity, title, message, blocks = build(data)
    if event.type == "log" and event.level == "debug":
        kind = "debug"
    if severity is None or event.level in ("warning", "error"):
        severity = _SEVERITY.get(event.level, "info")
    media = {key: list(data.pop(key, None) or []) for key in MEDIA}
    envelope: dict[str, Any] = {
        "id": str(event.id), "type": kind, "severity": severity, "title": title, "message": message,
        "job_id": event.job_id, "timestamp": _iso(event.timestamp), **media,
        "headline": title, "body": message, "message_type": kind,
    }
    envelope.update(blocks)
    envelope.update({"data": data, "event_type": event.type, "level": event.level, "version": event.version,
                     "unix_timestamp": event.timestamp})
    return envelope


def is_wire(raw: Mapping[str, Any]) -> bool:
    """True for an envelope (ours or SimpleTuner's); False for the older internal form."""
    return "event_type" in raw or "message_type" in raw or "severity" in raw


def _index(value: Any) -> int:
    """Our ids are integers; a foreign envelope's non-numeric id reads as 0 (unindexed)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _timestamp(raw: Mapping[str, Any]) -> float:
    if _num(raw.get("unix_timestamp")):
        return float(raw["unix_timestamp"])
    value = raw.get("timestamp")
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return float(value) if _num(value) else 0.0


def from_wire(raw: Mapping[str, Any]) -> Event:
    """The internal :class:`Event` of an envelope (exact for ours; SimpleTuner's keep their wire type), or of the
    older internal form (``type`` internal, ``title``/``body``/``images``/``videos`` possibly at the top level)."""
    if not is_wire(raw):
        lifted = ("title", "body", "images", "videos")
        return Event(type=str(raw["type"]), job_id=str(raw.get("job_id") or ""),
                     data={**dict(raw.get("data") or {}), **{k: raw[k] for k in lifted if k in raw}},
                     id=_index(raw.get("id")), timestamp=_timestamp(raw), level=str(raw.get("level") or "info"),
                     version=int(raw.get("version") or EVENT_SCHEMA_VERSION))
    data = dict(raw.get("data") or {})
    for key in MEDIA:
        if raw.get(key):
            data[key] = list(raw[key])
    severity = str(raw.get("severity") or "info")
    level = raw.get("level") or {"success": "info", "critical": "error"}.get(severity, severity)
    return Event(type=str(raw.get("event_type") or raw["type"]), job_id=str(raw.get("job_id") or ""), data=data,
                 id=_index(raw.get("id")), timestamp=_timestamp(raw), level=str(level),
                 version=int(raw.get("version") or EVENT_SCHEMA_VERSION))
