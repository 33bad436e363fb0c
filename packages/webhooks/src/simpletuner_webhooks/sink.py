"""Webhook event sinks that can never stall or fail training.

``emit`` only filters, formats and enqueues; one daemon thread per target POSTs with the stdlib (no extra
dependency, no torch). The queue is bounded by count (``max_queue``) and by bytes (``max_queue_bytes``: image
events are large). When it is over either bound, events are dropped by priority, oldest first within a rank:
``training.status`` first (a newer one supersedes it), then other routine events, then ``validation.image``,
and lifecycle events (``job.*``, ``checkpoint.saved``, errors) only when nothing else is left. Failed
deliveries are retried with exponential backoff (honouring ``Retry-After``); after ``failure_threshold``
undeliverable events in a row the target is marked *down* (a circuit breaker): events are skipped without
touching the network until ``cooldown`` has passed, then one event probes it. A receiver answering 429 is busy,
not down, so rate limiting never opens the breaker. Once the sink is closing, ``job.*`` and error-level events
get one attempt even while the breaker is open: they are the events a receiver most needs. Each change of
state (down, back up) is logged once.

Every POST carries SimpleTuner's event envelope (``simpletuner_core.events.wire``); the rules above name our
internal types, which the envelope keeps as ``event_type``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from http.client import HTTPException
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import attrs

from simpletuner_core import netguard
from simpletuner_core.events.types import Event
from simpletuner_core.events.wire import from_wire, to_wire
from simpletuner_core.netguard import AllowList, Resolver
from simpletuner_webhooks.config import LEVELS, WebhookTarget, level_value, redact_url

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
SIGNATURE_HEADER = "X-SimpleTuner-Signature"
TIMESTAMP_HEADER = "X-SimpleTuner-Timestamp"
DEFAULT_MAX_QUEUE_BYTES = 64 * 2**20
#: Event types dropped last when the queue is over its bounds (with every error-level event and ``job.*``).
KEEP_TYPES = frozenset({"checkpoint.saved"})
_USER_AGENT = "simpletuner-webhooks/0.1.0"


def _guarded(connection: type[http.client.HTTPConnection], allow: AllowList,
             resolve: Resolver) -> Callable[..., http.client.HTTPConnection]:
    """A connection factory for urllib whose sockets go only to addresses ``netguard`` checked. The Host
    header, and for HTTPS the SNI name and certificate check, keep the URL's host name."""
    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = connection(host, **kwargs)
        # http.client opens its socket through this hook; ours resolves once, checks, and connects to that IP.
        conn._create_connection = lambda address, timeout=None, source_address=None: netguard.connect(  # type: ignore[attr-defined]
            address[0], address[1], timeout, allow, resolve)
        return conn
    return make


class _GuardedHTTP(urllib.request.HTTPHandler):
    def __init__(self, allow: AllowList, resolve: Resolver) -> None:
        super().__init__()
        self._factory = _guarded(http.client.HTTPConnection, allow, resolve)

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._factory, req)


class _GuardedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, allow: AllowList, resolve: Resolver) -> None:
        super().__init__(context=context)
        self._guard_context = context
        self._factory = _guarded(http.client.HTTPSConnection, allow, resolve)

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._factory, req, context=self._guard_context)


def _blocked(exc: BaseException) -> netguard.BlockedAddress | None:
    """The guard's refusal inside whatever urllib wrapped it in."""
    reason = getattr(exc, "reason", exc)
    return reason if isinstance(reason, netguard.BlockedAddress) else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would turn a redirected POST into a bodiless GET; refuse instead so the failure is visible."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def envelope(event: Any, job_id: str | None = None) -> tuple[dict[str, Any], str]:
    """``(payload, level)``: SimpleTuner's envelope (``simpletuner_core.events.wire``) for an :class:`Event`,
    an object with ``to_dict()`` or a plain mapping, in either our wire form or the older internal one.

    Missing fields get the sink's job id, a fresh id and the current time so receivers can always rely on them.
    ``level`` is our internal level (``event_type`` in the payload is our internal type).
    """
    if isinstance(event, Event):
        raw: Any = event.to_dict()
    elif isinstance(event, Mapping):
        raw = event
    elif callable(getattr(event, "to_dict", None)):
        raw = event.to_dict()
        if not isinstance(raw, Mapping):
            raise TypeError(f"{type(event).__name__}.to_dict() returned {type(raw).__name__}, not a mapping")
    else:
        raise TypeError(f"webhook events must be mappings or have to_dict(), got {type(event).__name__}")
    if "type" not in raw:
        raise TypeError("webhook events need a type")
    internal = from_wire({**raw, "timestamp": raw.get("timestamp") or time.time()})
    if not internal.job_id and job_id:
        internal = attrs.evolve(internal, job_id=job_id)
    payload = to_wire(internal)
    if not raw.get("id"):
        payload["id"] = uuid.uuid4().hex
    return payload, internal.level


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``timestamp + "." + body``; receivers recompute and compare."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _redact(url: str) -> str:
    """Scheme, host and port only: webhook URLs carry tokens in the path (Discord's) and may carry
    ``user:password@`` in the authority, neither of which may reach a log line or an event."""
    return redact_url(url)


def _final(kind: str, level: str) -> bool:
    """Events that still get an attempt at shutdown while the breaker is open: the job's end and errors."""
    return kind.startswith("job.") or level_value(level) >= LEVELS["error"]


def _drop_rank(kind: str, level: str) -> int:
    """Lower is dropped first when the queue is over its bounds."""
    if kind.startswith("job.") or kind in KEEP_TYPES or level_value(level) >= LEVELS["error"]:
        return 3
    if kind == "validation.image":
        return 2
    return 0 if kind == "training.status" else 1


@attrs.frozen
class _Queued:
    body: bytes
    content_type: str
    kind: str
    level: str


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """``(url without user:password@, Basic Authorization header or None)``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=hostport)), f"Basic {token}"


class WebhookSink:
    """Deliver events to one HTTP target from a background thread. Subclasses choose the body (``format``).

    Counters (``sent``, ``failed``, ``dropped``, ``filtered``, ``throttled``, ``skipped``, ``attempts``) make
    every lost event observable; ``state`` is ``up`` or ``down``.
    """

    kind = "raw"

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
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        job_id: str | None = None,
        secret: str | None = None,
        failure_threshold: int = 3,
        cooldown: float = 30.0,
        reporting_interval: float | None = None,
        message_prefix: str = "",
        restricted: bool = False,
        allow: AllowList | None = None,
        resolve: Resolver = netguard.system_resolve,
    ) -> None:
        """``restricted`` (a non-admin's job): connect only to public addresses or those ``allow`` lists
        (default: ``$SIMPLETUNER_WEBHOOK_ALLOW``), checked at each connection, never through a proxy."""
        if max_attempts < 1 or max_queue < 1 or max_queue_bytes < 1 or timeout <= 0 or failure_threshold < 1:
            raise ValueError("max_attempts, max_queue, max_queue_bytes and failure_threshold must be >= 1 and "
                             "timeout > 0")
        if str(log_level).lower() not in LEVELS:
            raise ValueError(f"log_level {log_level!r} is not one of: {', '.join(LEVELS)}")
        self.callback_url = callback_url
        self.label = f"{self.kind} webhook {_redact(callback_url)}"
        # ``user:password@`` in the URL becomes a Basic Authorization header; the request URL goes without it,
        # so no library error message (an invalid port, a refused connection) can repeat the credentials.
        self._request_url, self._authorization = _split_userinfo(callback_url)
        self._hidden = [t for t in (urlsplit(callback_url).password, urlsplit(callback_url).path,
                                    urlsplit(callback_url).query) if t and len(t) > 1]
        self.log_level = str(log_level).lower()
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.job_id = job_id
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.reporting_interval = reporting_interval or 0.0
        self.message_prefix = message_prefix
        self._secret = secret
        self.sent = self.failed = self.dropped = self.filtered = self.throttled = self.skipped = 0
        self.attempts = 0
        self.state = "up"
        self._failures_in_row = 0
        self._down_since = 0.0
        self._skipped_while_down = 0
        self._last_status = float("-inf")
        self._min_level = LEVELS[self.log_level]
        self._queue: deque[_Queued] = deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self.restricted = restricted
        self._blocked_logged = False
        guard = (allow if allow is not None else AllowList.from_env(), resolve) if restricted else None
        self._opener = self._build_opener(ssl_no_verify, guard)
        self._thread = threading.Thread(target=self._run, name=f"simpletuner-{self.kind}-webhook", daemon=True)
        self._thread.start()

    @classmethod
    def from_target(cls, target: WebhookTarget, **kwargs: Any) -> WebhookSink:
        """Build from a parsed ``webhook_config`` entry."""
        options = {"log_level": target.log_level, "ssl_no_verify": target.ssl_no_verify, "secret": target.secret,
                   "timeout": target.timeout, "max_attempts": target.max_attempts, "backoff": target.backoff,
                   "failure_threshold": target.failure_threshold, "cooldown": target.cooldown,
                   "message_prefix": target.message_prefix, "max_queue_bytes": target.max_queue_bytes}
        return cls(target.callback_url, **{**options, **kwargs})

    @staticmethod
    def _build_opener(ssl_no_verify: bool,
                      guard: tuple[AllowList, Resolver] | None = None) -> urllib.request.OpenerDirector:
        context = ssl.create_default_context()
        if ssl_no_verify:  # explicit user opt-in for self-signed receivers
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if guard is None:
            return urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=context))
        # No proxy: the connection must go to the address that was checked, not to whatever a proxy reaches.
        return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect(),
                                           _GuardedHTTP(*guard), _GuardedHTTPS(context, *guard))

    def format(self, payload: dict[str, Any]) -> tuple[bytes, str] | None:
        """``(body, content type)`` for one event, or None to skip it. Raw: the JSON envelope."""
        return json.dumps(payload, separators=(",", ":"), default=str).encode("utf-8"), "application/json"

    # -- producer side (training thread) ------------------------------------------------------------

    def _throttle(self, payload: dict[str, Any]) -> bool:
        """True when a ``training.progress`` arrives within ``reporting_interval`` of the last one sent."""
        if payload.get("event_type") != "training.status" or self.reporting_interval <= 0:
            return False
        data = payload.get("data") or {}
        last_step = data.get("total") is not None and data.get("step") == data.get("total")
        now = time.monotonic()
        if not last_step and now - self._last_status < self.reporting_interval:
            return True
        self._last_status = now
        return False

    def emit(self, event: Any) -> None:
        """Queue ``event`` without touching the network; events below ``log_level`` are skipped."""
        payload, level = envelope(event, self.job_id)
        with self._cond:
            if level_value(level) < self._min_level:
                self.filtered += 1
                return
            if self._throttle(payload):
                self.throttled += 1
                return
        formatted = self.format(payload)
        if formatted is None:
            with self._cond:
                self.filtered += 1
            return
        item = _Queued(formatted[0], formatted[1], str(payload.get("event_type") or ""), level)
        with self._cond:
            if self._closing:
                self.dropped += 1
                return
            self._queue.append(item)
            self._queued_bytes += len(item.body)
            while self._queue and (len(self._queue) > self.max_queue or self._queued_bytes > self.max_queue_bytes):
                self._evict()
            self._cond.notify()

    def _evict(self) -> None:
        """Drop the oldest queued event of the lowest rank (caller holds the lock)."""
        victim = min(range(len(self._queue)), key=lambda i: (_drop_rank(self._queue[i].kind, self._queue[i].level), i))
        item = self._queue[victim]
        del self._queue[victim]
        self._queued_bytes -= len(item.body)
        self.dropped += 1

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
            self._queued_bytes = 0
            self._cond.notify_all()
        log.warning("%s: gave up after %.1fs with deliveries outstanding", self.label, timeout)
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
                item = self._queue.popleft()
                self._queued_bytes -= len(item.body)
                closing = self._closing
            cooling = self.state == "down" and time.monotonic() - self._down_since < self.cooldown
            if cooling and not (closing and _final(item.kind, item.level)):
                with self._cond:
                    self.skipped += 1
                    self._skipped_while_down += 1
                continue
            probe = self.state == "down"
            self._rate_limited = False
            try:
                ok = self._deliver(item.body, item.content_type, attempts=1 if probe else self.max_attempts)
            except Exception:  # a bug here must not kill the worker and strand the queue
                log.exception("%s: unexpected error delivering event", self.label)
                ok = False
            with self._cond:
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1
            if ok or not self._rate_limited:  # 429: the receiver is up but busy; the breaker is not touched
                self._track(ok)

    def _track(self, ok: bool) -> None:
        """Breaker bookkeeping; the only place that logs, once per change of state."""
        if ok:
            self._failures_in_row = 0
            if self.state == "down":
                self.state = "up"
                log.warning("%s: receiver is back up (%d event(s) skipped while it was down)", self.label,
                            self._skipped_while_down)
            return
        self._failures_in_row += 1
        if self.state == "down":
            self._down_since = time.monotonic()  # the probe failed: wait another cooldown, quietly
        elif self._failures_in_row >= self.failure_threshold:
            self.state = "down"
            self._down_since = time.monotonic()
            self._skipped_while_down = 0
            log.warning("%s: receiver is down (%d event(s) in a row undeliverable: %s); skipping events, "
                        "retrying every %.0fs", self.label, self._failures_in_row, self._last_problem,
                        self.cooldown)

    _last_problem = ""
    _rate_limited = False

    def _scrub(self, text: str) -> str:
        """``text`` (an error message, which is logged) without the URL's path, query or password."""
        for secret in sorted(self._hidden, key=len, reverse=True):
            text = text.replace(secret, "<redacted>")
        return text

    def _headers(self, body: bytes, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "User-Agent": _USER_AGENT}
        if self._authorization:
            headers["Authorization"] = self._authorization
        if self._secret:
            stamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = signature(self._secret, stamp, body)
        return headers

    def _post(self, body: bytes, content_type: str) -> tuple[int, float | None]:
        """``(status, retry_after seconds or None)``."""
        request = urllib.request.Request(self._request_url, data=body, method="POST",
                                         headers=self._headers(body, content_type))
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
                return int(response.status), None
        except urllib.error.HTTPError as exc:  # non-2xx (including refused redirects)
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            exc.close()
            try:
                wait = float(retry_after) if retry_after is not None else None
            except ValueError:
                wait = None
            return int(exc.code), wait

    def _deliver(self, body: bytes, content_type: str, attempts: int) -> bool:
        """Up to ``attempts`` tries; 5xx, 429 and network errors are retried with exponential backoff."""
        for attempt in range(1, attempts + 1):
            if self._abort.is_set():
                return False
            self.attempts += 1
            retry_after: float | None = None
            try:
                status: int | None
                status, retry_after = self._post(body, content_type)
                problem = f"HTTP {status}"
            except (OSError, HTTPException) as exc:  # URLError, refused, reset, timeout, bad status line
                refused = _blocked(exc)
                if refused is not None:  # policy, not a network problem: retrying cannot help
                    self._last_problem = self._scrub(str(refused))
                    if not self._blocked_logged:
                        self._blocked_logged = True
                        log.warning("%s: not sent: %s", self.label, self._last_problem)
                    return False
                status, problem = None, self._scrub(f"{type(exc).__name__}: {exc}")
            if status is not None and 200 <= status < 300:
                return True
            self._rate_limited = status == 429
            if not self._rate_limited:
                self._last_problem = problem
            retryable = status is None or status >= 500 or status == 429
            if not retryable or attempt == attempts:
                log.debug("%s: event undeliverable after %d attempt(s): %s", self.label, attempt, problem)
                return False
            delay = retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1)
            if self._abort.wait(min(max(0.0, delay), MAX_BACKOFF_S)):
                return False
        return False


class RawWebhookSink(WebhookSink):
    """POST each event's JSON envelope to ``callback_url``."""

    kind = "raw"


class FanoutSink:
    """Several webhook targets behind the single sink a factory may return."""

    def __init__(self, sinks: Iterable[WebhookSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event: Any) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def close(self, timeout: float = 10.0) -> bool:
        """Close all targets within one shared deadline (they drain in parallel already)."""
        deadline = time.monotonic() + timeout
        results = [sink.close(max(0.0, deadline - time.monotonic())) for sink in self.sinks]
        return all(results)
