"""Parse ``webhook_config`` the way SimpleTuner accepts it, failing early with messages that say what to fix.

Accepted: a JSON string holding one object or a list of objects, a path to such a JSON file, a dict, or a list
of dicts. Each object needs ``webhook_type`` (``raw`` or ``discord``) and ``callback_url`` (http/https); the
delivery knobs below are optional. Unknown keys are ignored so SimpleTuner's configs keep working.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

SUPPORTED_TYPES: tuple[str, ...] = ("raw", "discord")
#: Ordered lowest to highest; an event is sent when its level is at or above the target's ``log_level``.
LEVELS: dict[str, int] = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def level_value(level: object, default: str = "info") -> int:
    """Numeric rank of a level name (or a ``logging`` int); unknown names rank as ``default``."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    return LEVELS.get(str(level or default).strip().lower(), LEVELS[default])


@attrs.frozen
class WebhookTarget:
    """One validated webhook destination."""

    webhook_type: str
    callback_url: str
    log_level: str = "info"
    ssl_no_verify: bool = False
    #: HMAC-SHA256 key for the ``X-SimpleTuner-Signature`` header (from ``secret`` or the ``secret_env`` variable).
    secret: str | None = attrs.field(default=None, repr=False)
    timeout: float = 5.0
    max_attempts: int = 3
    backoff: float = 0.5
    #: Consecutive undeliverable events that mark the receiver down; ``cooldown`` seconds before a retry probe.
    failure_threshold: int = 3
    cooldown: float = 30.0
    message_prefix: str = ""
    #: Bytes of undelivered events held per target (image events are large); see the sink's drop order.
    max_queue_bytes: int = 64 * 2**20


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no credentials (``user:pass@``), path, query or fragment, which is
    where webhook URLs keep their tokens. Safe to put in logs, events and error messages."""
    try:
        parts = urlsplit(str(url).strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a malformed port or bracketed host: say nothing about it
        return "<unparseable URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    return f"{scheme}{host}{f':{port}' if port is not None else ''}" if host else f"{scheme}<no host>"


def _load(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        raise ValueError("webhook_config is empty; expected a JSON object or list of objects")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        path = Path(text).expanduser()
        if text[0] not in "{[" and path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as file_exc:
                raise ValueError(f"webhook_config file {str(path)!r} is not valid JSON: {file_exc}") from None
        raise ValueError(
            f"webhook_config is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}) "
            "and not a path to a JSON file"
        ) from None


def _target(index: int, raw: Any) -> WebhookTarget:
    where = f"webhook_config[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {type(raw).__name__}")
    kind = raw.get("webhook_type")
    supported = ", ".join(SUPPORTED_TYPES)
    if kind not in SUPPORTED_TYPES:
        got = "missing" if kind is None else repr(kind)
        raise ValueError(f"{where}.webhook_type is {got}; supported webhook types: {supported}")
    url = raw.get("callback_url")
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{where}.callback_url is required for webhook_type {kind!r}")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        # Never echo the URL itself: it becomes a job.failed reason and a webhook; its path/userinfo hold tokens.
        raise ValueError(f"{where}.callback_url must be an http:// or https:// URL with a host, got "
                         f"{redact_url(url)!r}")
    level = str(raw.get("log_level") or "info").strip().lower()
    if level not in LEVELS:
        raise ValueError(f"{where}.log_level {level!r} is not one of: {', '.join(LEVELS)}")
    no_verify = raw.get("ssl_no_verify", False)
    if not isinstance(no_verify, bool):
        raise ValueError(f"{where}.ssl_no_verify must be true or false, got {no_verify!r}")
    secret = raw.get("secret")
    secret_env = raw.get("secret_env")
    if secret_env:
        secret = os.environ.get(str(secret_env))
        if not secret:
            raise ValueError(f"{where}.secret_env names {secret_env!r}, which is not set in the environment")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ValueError(f"{where}.secret must be a non-empty string")
    numbers: dict[str, Any] = {}
    for key, kind_of, low in (("timeout", float, 0.001), ("max_attempts", int, 1), ("backoff", float, 0.0),
                              ("failure_threshold", int, 1), ("cooldown", float, 0.0),
                              ("max_queue_bytes", int, 1)):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                raise ValueError(f"{where}.{key} must be a number >= {low:g}, got {value!r}")
            numbers[key] = kind_of(value)
    return WebhookTarget(
        webhook_type=kind, callback_url=url.strip(), log_level=level, ssl_no_verify=no_verify, secret=secret,
        message_prefix=str(raw.get("message_prefix") or ""), **numbers,
    )


def parse_webhook_config(value: Any) -> list[WebhookTarget]:
    """Every target in ``value``; raises ValueError naming the offending entry and field."""
    loaded = _load(value)
    if isinstance(loaded, Mapping):
        items: Sequence[Any] = [loaded]
    elif isinstance(loaded, Sequence) and not isinstance(loaded, (str, bytes)):
        items = list(loaded)
    else:
        raise ValueError(
            f"webhook_config must be an object or a list of objects, got {type(loaded).__name__}"
        )
    if not items:
        raise ValueError("webhook_config lists no webhooks")
    return [_target(i, raw) for i, raw in enumerate(items)]
