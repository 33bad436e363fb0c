"""A webhook event sink that can never stall training.

``emit`` only serialises and enqueues; one daemon thread POSTs with the stdlib (no extra dependency).
The queue is bounded and drops the oldest event when full: a slow receiver may cost a bounded amount of
events, never training time. Failed deliveries are retried a few times with backoff, then counted.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from http.client import HTTPException
from typing import Any

from simpletuner_webhooks.config import LEVELS, WebhookTarget, level_value

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
_USER_AGENT = "simpletuner-webhooks/0.1.0"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would turn a redirected POST into a bodiless GET; refuse instead so the failure is visible."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def envelope(event: Any, job_id: str | None = None) -> tuple[dict[str, Any], str]:
    """``(payload, level)`` for an event object with ``to_dict()`` or a plain mapping.

    The payload is the stable wire shape ``{"type", "job_id", "id", "timestamp", "data"}``; missing fields get
    the sink's job id, a fresh id and the current time so receivers can always rely on them.
    """
    if isinstance(event, Mapping):
        raw: Any = event
    elif callable(getattr(event, "to_dict", None)):
        raw = event.to_dict()
        if not isinstance(raw, Mapping):
            raise TypeError(f"{type(event).__name__}.to_dict() returned {type(raw).__name__}, not a mapping")
    else:
        raise TypeError(f"webhook events must be mappings or have to_dict(), got {type(event).__name__}")
    payload = {
        "type": raw.get("type"),
        "job_id": raw.get("job_id") or job_id,
        "id": raw.get("id") or uuid.uuid4().hex,
        "timestamp": raw.get("timestamp") or time.time(),
        "data": raw.get("data") if raw.get("data") is not None else {},
    }
    return payload, str(raw.get("level") or "info")


class RawWebhookSink:
    """POST each event as JSON to ``callback_url`` from a background thread.

    Counters (``sent``, ``failed``, ``dropped``, ``filtered``) make silent loss observable in tests and logs.
    """

    def __init__(
        self,
        callback_url: str,
        *,
        log_level: str = "info",
        ssl_no_verify: bool = False,
        timeout: float = 5.0,
        max_attempts: int = 3,
        backoff: float = 0.5,
        max_queue: int = 1000,
        job_id: str | None = None,
    ) -> None:
        if max_attempts < 1 or max_queue < 1 or timeout <= 0:
            raise ValueError("max_attempts and max_queue must be >= 1 and timeout > 0")
        if str(log_level).lower() not in LEVELS:
            raise ValueError(f"log_level {log_level!r} is not one of: {', '.join(LEVELS)}")
        self.callback_url = callback_url
        self.log_level = str(log_level).lower()
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_queue = max_queue
        self.job_id = job_id
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.filtered = 0
        self._min_level = LEVELS[self.log_level]
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._opener = self._build_opener(ssl_no_verify)
        self._thread = threading.Thread(target=self._run, name="simpletuner-webhook", daemon=True)
        self._thread.start()

    @classmethod
    def from_target(cls, target: WebhookTarget, **kwargs: Any) -> RawWebhookSink:
        """Build from a parsed ``webhook_config`` entry."""
        return cls(
            target.callback_url, log_level=target.log_level, ssl_no_verify=target.ssl_no_verify, **kwargs
        )

    @staticmethod
    def _build_opener(ssl_no_verify: bool) -> urllib.request.OpenerDirector:
        context = ssl.create_default_context()
        if ssl_no_verify:  # explicit user opt-in for self-signed receivers
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=context))

    # -- producer side (training thread) ------------------------------------------------------------

    def emit(self, event: Any) -> None:
        """Queue ``event`` without touching the network; events below ``log_level`` are skipped."""
        payload, level = envelope(event, self.job_id)
        if level_value(level) < self._min_level:
            with self._cond:
                self.filtered += 1
            return
        body = json.dumps(payload, separators=(",", ":"), default=str).encode("utf-8")
        with self._cond:
            if self._closing:
                self.dropped += 1
                return
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(body)
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued, waiting at most ``timeout`` seconds; True when everything was handled.

        On timeout the worker is told to stop (it is a daemon, so it cannot keep the process alive) and the
        undelivered events are counted as dropped.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.0, timeout))
        if not self._thread.is_alive():
            return True
        self._abort.set()
        with self._cond:
            self.dropped += len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        log.warning("webhook %s: gave up after %.1fs with deliveries outstanding", self.callback_url, timeout)
        return False

    @property
    def pending(self) -> int:
        """Events queued but not yet picked up by the worker."""
        with self._cond:
            return len(self._queue)

    # -- consumer side (worker thread) --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._abort.is_set():
                    return
                body = self._queue.popleft()
            try:
                ok = self._deliver(body)
            except Exception:  # a bug here must not kill the worker and strand the queue
                log.exception("webhook %s: unexpected error delivering event", self.callback_url)
                ok = False
            with self._cond:
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1

    def _post(self, body: bytes) -> int:
        request = urllib.request.Request(
            self.callback_url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as exc:  # non-2xx (including refused redirects)
            exc.close()
            return int(exc.code)

    def _deliver(self, body: bytes) -> bool:
        """Up to ``max_attempts`` tries; 5xx, 429 and network errors are retried with exponential backoff."""
        for attempt in range(1, self.max_attempts + 1):
            if self._abort.is_set():
                return False
            try:
                status: int | None = self._post(body)
                problem = f"HTTP {status}"
            except (OSError, HTTPException) as exc:  # URLError, refused, reset, timeout, bad status line
                status, problem = None, f"{type(exc).__name__}: {exc}"
            if status is not None and 200 <= status < 300:
                return True
            retryable = status is None or status >= 500 or status == 429
            if not retryable or attempt == self.max_attempts:
                log.warning(
                    "webhook %s: giving up on event after %d attempt(s): %s",
                    self.callback_url,
                    attempt,
                    problem,
                )
                return False
            log.debug("webhook %s: attempt %d failed (%s), retrying", self.callback_url, attempt, problem)
            if self._abort.wait(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)):
                return False
        return False


class FanoutSink:
    """Several webhook targets behind the single sink a factory may return."""

    def __init__(self, sinks: Iterable[RawWebhookSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event: Any) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def close(self, timeout: float = 10.0) -> bool:
        """Close all targets within one shared deadline (they drain in parallel already)."""
        deadline = time.monotonic() + timeout
        results = [sink.close(max(0.0, deadline - time.monotonic())) for sink in self.sinks]
        return all(results)
