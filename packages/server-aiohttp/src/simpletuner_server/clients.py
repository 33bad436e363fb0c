"""Who is on the other end of a request: client address, "is this the server's own machine", rate limits.

Proxy headers are attacker-controlled unless a trusted reverse proxy sets them, so they are only read when
``trust_proxy`` is on. With it off, a loopback peer that still carries forwarding headers is treated as
*not* local: that is what a reverse proxy on the same host looks like, and its clients must not inherit
loopback trust.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable

from aiohttp import web

FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything unparsable (unix sockets)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def client_ip(request: web.BaseRequest, trust_proxy: bool) -> str:
    """The peer address, or with ``trust_proxy`` the last ``X-Forwarded-For`` hop (added by our proxy)."""
    if trust_proxy:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")]
        if hops[-1]:
            return hops[-1]
    return request.remote or "unknown"


def is_local_request(request: web.BaseRequest, trust_proxy: bool) -> bool:
    """Whether the client runs on the server's machine (what allows first-admin setup without the token)."""
    if trust_proxy:
        return is_loopback(client_ip(request, trust_proxy=True))
    return is_loopback(request.remote) and not any(name in request.headers for name in FORWARDING_HEADERS)


class RateLimiter:
    """At most ``max_failures`` failures per key in any ``window`` seconds (sliding), in memory.

    Callers count an attempt *before* the slow password check and :meth:`forgive` it on success, so parallel
    guesses cannot all slip in before the first failure is recorded. ``max_keys`` bounds memory under a flood
    of distinct addresses (the least recently failing keys are forgotten first).
    """

    def __init__(self, max_failures: int = 5, window: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window, self.max_keys, self._clock = max_failures, window, max_keys, clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        stamps = self._failures.get(key, deque())
        cutoff = self._clock() - self.window
        while stamps and stamps[0] <= cutoff:
            stamps.popleft()
        return stamps

    def retry_after(self, key: str) -> int | None:
        """Seconds until ``key`` may try again, or None when it is not limited."""
        stamps = self._recent(key)
        if len(stamps) < self.max_failures:
            return None
        return max(1, math.ceil(stamps[-self.max_failures] + self.window - self._clock()))

    def record(self, key: str) -> None:
        stamps = self._recent(key)
        stamps.append(self._clock())
        self._failures.pop(key, None)
        self._failures[key] = stamps  # re-insert: dict order is least recently failing first
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]

    def forgive(self, key: str) -> None:
        """Undo one :meth:`record` (a counted attempt that turned out to succeed)."""
        stamps = self._failures.get(key)
        if stamps:
            stamps.pop()
