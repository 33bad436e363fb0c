"""Field checks of the worker routes' bodies (validated before anything is stored)."""

from __future__ import annotations

import re
from typing import Any

from simpletuner_server import validation as v
from simpletuner_server.validation import check

LABEL_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STATES = ("running", "completed", "failed", "stopped", "cancelled")


@check({"type": ["number", "null"], "minimum": 0})
def number(value: Any) -> str | None:
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be a non-negative number or null"


def nullable_text(max_length: int = 256) -> v.Check:
    inner = v.text(max_length)

    @check({"type": ["string", "null"], "maxLength": max_length})
    def maybe(value: Any) -> str | None:
        return None if value is None else inner(value)

    return maybe


@check({"type": "object", "additionalProperties": {"type": "string", "maxLength": 256}})
def labels(value: Any) -> str | None:
    if not isinstance(value, dict) or len(value) > 64:
        return "must be an object of at most 64 label name -> string value"
    for key, item in value.items():
        if not LABEL_RE.fullmatch(key) or not isinstance(item, str) or len(item) > 256:
            return f"label {key!r}: names are 1-64 of letters, digits, '_', '.', '-'; values strings"
    return None


@check({"type": "object", "properties": {"name": {"type": ["string", "null"]}, "vram_gb": {"type": ["number", "null"]},
                                          "count": {"type": "integer"}, "accelerator": {"type": ["string", "null"]}}})
def gpu_info(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object {name, vram_gb, count, accelerator}"
    unknown = sorted(set(value) - {"name", "vram_gb", "count", "accelerator"})
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}"
    for key, test in (("name", nullable_text()), ("vram_gb", number), ("count", v.integer(0, 1024)),
                      ("accelerator", nullable_text(64))):
        if key in value:
            problem = test(value[key])
            if problem:
                return f"{key} {problem}"
    return None


@check({"type": "string", "enum": list(STATES)})
def state(value: Any) -> str | None:
    return None if value in STATES else f"must be one of {', '.join(STATES)}"


@check({"type": "array", "items": {"type": "object", "required": ["path", "size"]}})
def outputs(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) > 10_000:
        return "must be a list of {path, size}"
    for item in value:
        if not (isinstance(item, dict) and isinstance(item.get("path"), str)
                and isinstance(item.get("size"), int) and not isinstance(item.get("size"), bool)):
            return "each output must be {path: string, size: integer}"
    return None


@check({"type": "array", "maxItems": 1000, "items": {"type": "object", "required": ["seq", "type"]}})
def events(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) > 1000:
        return "must be a list of at most 1000 events"
    for item in value:
        if not isinstance(item, dict):
            return "each event must be an object"
        seq = item.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= 0:
            return "each event needs seq: a positive integer"
        if not isinstance(item.get("type"), str) or not item["type"]:
            return "each event needs type: a non-empty string"
        if not isinstance(item.get("data", {}), dict):
            return "an event's data must be an object"
    return None


REGISTER = v.Body({
    "name": nullable_text(128), "worker_type": nullable_text(16), "persistent": v.boolean,
    "gpu_count": v.integer(0, 1024), "gpu_name": nullable_text(), "gpu_vram_gb": number,
    "accelerator_type": nullable_text(64), "gpu_info": gpu_info, "cpu_count": v.integer(0, 100_000),
    "hostname": nullable_text(), "agent_version": nullable_text(64), "current_job_id": nullable_text(128),
    "labels": labels,
})
HEARTBEAT = v.Body({"current_job_id": nullable_text(128), "status": nullable_text(32), "step": v.integer(0, 2**62)})
STATUS = v.Body({"state": state, "attempt": v.integer(0, 1000), "reason": nullable_text(4000),
                 "resumable": v.boolean, "outputs": outputs, "output_dir": nullable_text(4096)},
                required=("state",))
EVENTS = v.Body({"attempt": v.integer(0, 1000), "events": events}, required=("events",))
CREATE = v.Body({"name": v.text(128), "worker_type": nullable_text(16), "labels": labels,
                 "persistent": v.boolean}, required=("name",))
