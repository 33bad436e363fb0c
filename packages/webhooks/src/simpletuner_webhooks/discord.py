"""A Discord webhook sink: short messages with an embed, validation images attached as files.

Discord's webhook API takes JSON ``{"content", "embeds"}``, or ``multipart/form-data`` with a ``payload_json``
part plus ``files[n]`` parts when files are attached (an embed shows one with ``attachment://name``). Chat
channels are for people, so the per-step progress is only sent when ``webhook_reporting_interval`` allows it
(default: every 60 s), the free-text ``log`` events only at warning and above, and lifecycle stages when they
start or fail. Payloads are SimpleTuner's envelope; the type checks here use our internal ``event_type``.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime, timezone
from typing import Any

from simpletuner_webhooks.config import level_value
from simpletuner_webhooks.sink import WebhookSink

CONTENT_LIMIT = 2000  # Discord's limits
DESCRIPTION_LIMIT = 4096
COLOURS = {"debug": 0x95A5A6, "info": 0x3498DB, "warning": 0xF1C40F, "error": 0xE74C3C, "critical": 0xE74C3C}
DEFAULT_STATUS_INTERVAL = 60.0


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(payload: dict[str, Any]) -> tuple[str, str]:
    """A one-line title and a short body for a person reading a channel (from our internal type, the envelope's
    ``event_type``; the envelope's own title and message otherwise)."""
    kind = str(payload.get("event_type") or payload.get("type"))
    data = payload.get("data") or {}
    if kind == "validation.image" and payload.get("title"):
        return str(payload["title"]), str(payload.get("message") or payload.get("body") or "")
    if kind == "training.status":
        eta = data.get("eta_seconds")
        eta_text = f", ETA {int(eta) // 60}m{int(eta) % 60:02d}s" if isinstance(eta, (int, float)) else ""
        loss = data.get("loss")
        loss_text = f", loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
        return (f"Step {data.get('step')}/{data.get('total')} ({data.get('percent')}%)",
                f"{loss_text.lstrip(', ')}{eta_text}".strip(", "))
    if kind == "checkpoint.saved":
        return f"Checkpoint saved at step {data.get('step')}", str(data.get("path", ""))
    if kind == "job.failed":
        return "Training failed", str(data.get("reason", ""))
    if kind == "job.completed":
        return f"Training completed at step {data.get('step')}", str(data.get("output_dir", ""))
    if kind == "job.stage":
        stage = (payload.get("stage") or {}).get("label") or data.get("stage")
        return f"Stage: {stage} ({data.get('status', 'running')})", str(data.get("error") or data.get("message", ""))
    if kind in ("log", "hook.script", "publish.failed"):
        return kind, str(data.get("message", ""))
    if payload.get("title"):
        return str(payload["title"]), str(payload.get("message") or payload.get("body") or "")
    return kind, ", ".join(f"{k}={v}" for k, v in data.items() if isinstance(v, (str, int, float)))[:500]


def _timestamp(payload: dict[str, Any]) -> str:
    """ISO 8601, as Discord wants it: the envelope's own, or from a bare unix time."""
    value = payload.get("timestamp")
    if isinstance(value, str):
        return value
    return datetime.fromtimestamp(float(payload.get("unix_timestamp") or value or 0), tz=timezone.utc).isoformat()


def _png(images: Any) -> bytes | None:
    for image in images or []:
        src = str(image.get("src", "")) if isinstance(image, dict) else ""
        if src.startswith("data:image/png;base64,"):
            try:
                return base64.b64decode(src.split(",", 1)[1], validate=True)
            except (binascii.Error, ValueError):
                return None
    return None


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    """Encode form fields and ``(field, filename, data, mime)`` files; returns ``(body, content type)``."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n"
                f"Content-Type: application/json\r\n\r\n").encode() + value.encode("utf-8") + b"\r\n"
    for name, filename, data, mime in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: {mime}\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class DiscordWebhookSink(WebhookSink):
    """Messages for a Discord channel webhook (``webhook_type: discord``)."""

    kind = "discord"

    def __init__(self, callback_url: str, **kwargs: Any) -> None:
        if not kwargs.get("reporting_interval"):
            kwargs["reporting_interval"] = DEFAULT_STATUS_INTERVAL
        super().__init__(callback_url, **kwargs)

    def format(self, payload: dict[str, Any]) -> tuple[bytes, str] | None:
        level = str(payload.get("level") or "info")
        kind = payload.get("event_type") or payload.get("type")
        if kind == "log" and level_value(level) < level_value("warning"):
            return None
        if kind == "job.stage" and (payload.get("data") or {}).get("status") == "completed":
            return None  # a channel hears when a stage starts or fails, not each completion
        title, body = describe(payload)
        embed: dict[str, Any] = {
            "title": _clip(title, 256),
            "description": _clip(body, DESCRIPTION_LIMIT),
            "color": COLOURS.get(level, COLOURS["info"]),
            "footer": {"text": f"job {payload.get('job_id')} · {kind}"},
            "timestamp": _timestamp(payload),
        }
        message: dict[str, Any] = {"content": _clip(f"{self.message_prefix}{title}", CONTENT_LIMIT),
                                   "embeds": [embed]}
        image = _png(payload.get("images"))
        if image is None:
            return json.dumps(message).encode("utf-8"), "application/json"
        embed["image"] = {"url": "attachment://image.png"}
        message["attachments"] = [{"id": 0, "filename": "image.png"}]
        return multipart({"payload_json": json.dumps(message)}, [("files[0]", "image.png", image, "image/png")])
