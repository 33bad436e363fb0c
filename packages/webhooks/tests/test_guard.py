"""Send-time SSRF guard of restricted (non-admin) sinks, against a real loopback receiver.

Names are resolved by the sink's resolver, once per connection, and the socket goes to the address that was
checked; tests swap the resolver so a made-up name maps to loopback without touching DNS or leaving loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook_receiver import Receiver

from simpletuner_core.netguard import AllowList, blocked_reason
from simpletuner_webhooks import RawWebhookSink
from simpletuner_webhooks.plugin import make_sink


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.0.10", "private"), ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("100.64.0.1", "private"), ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("93.184.215.14", None), ("2606:4700:4700::1111", None),
])
def test_blocked_ranges(address: str, reason: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


def test_allow_list_format() -> None:
    allow = AllowList.parse(" hooks.internal , 10.0.0.0/8,127.0.0.1, fd00::/8,[::1] ")
    assert allow.hosts == {"hooks.internal"} and allow.allows_host("HOOKS.internal.")
    assert all(allow.allows(ipaddress.ip_address(a)) for a in ("10.9.9.9", "127.0.0.1", "fd00::5", "::1"))
    assert not allow.allows(ipaddress.ip_address("127.0.0.2"))
    for bad in ("10.0.0.0/33", "http://x", "a..b"):
        with pytest.raises(ValueError, match="SIMPLETUNER_WEBHOOK_ALLOW"):
            AllowList.parse(bad)


class Resolver:
    """Maps every name to one loopback address, counting lookups."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address, self.calls = address, 0

    def __call__(self, host: str, port: int) -> list[tuple[int, Any]]:
        self.calls += 1
        return [(socket.AF_INET, (self.address, port))]


def test_a_name_resolving_to_loopback_is_refused_at_send_time(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver()
    caplog.set_level(logging.WARNING, logger="simpletuner_webhooks.sink")
    try:
        resolve = Resolver()
        sink = RawWebhookSink(f"http://hooks.example:{receiver.port}/hook", restricted=True, allow=AllowList(),
                              resolve=resolve, backoff=0.0)
        for i in range(2):
            sink.emit({"type": "log", "data": {"i": i}})
        assert sink.close(10) is True
        assert receiver.hits == 0 and (sink.sent, sink.failed) == (0, 2)
        assert sink.attempts == 2  # refused by policy: never retried
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines  # said once
        assert "hooks.example resolves to 127.0.0.1, which is a loopback address" in lines[0]
        assert "SIMPLETUNER_WEBHOOK_ALLOW" in lines[0] and f"{receiver.port}/hook" not in lines[0]
    finally:
        receiver.stop()


def test_localhost_is_refused_and_allowed_when_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver()
    try:
        url = f"http://localhost:{receiver.port}/hook"
        monkeypatch.delenv("SIMPLETUNER_WEBHOOK_ALLOW", raising=False)
        refused = RawWebhookSink(url, restricted=True, backoff=0.0)  # the system resolver
        refused.emit({"type": "log", "data": {}})
        assert refused.close(10) is True and refused.failed == 1 and receiver.hits == 0
        monkeypatch.setenv("SIMPLETUNER_WEBHOOK_ALLOW", "localhost")
        allowed = RawWebhookSink(url, restricted=True, backoff=0.0)
        allowed.emit({"type": "log", "data": {"n": 1}})
        assert allowed.close(10) is True and allowed.sent == 1
        assert receiver.posts[-1]["data"] == {"n": 1}
        unrestricted = RawWebhookSink(receiver.url)  # an admin's job: loopback as before
        unrestricted.emit({"type": "log", "data": {"n": 2}})
        assert unrestricted.close(10) is True and unrestricted.sent == 1
    finally:
        receiver.stop()


def test_the_connection_goes_to_the_checked_address_with_the_host_name_kept() -> None:
    """``hooks.example`` exists in no DNS: the request can only arrive if the socket went to the address the
    guard resolved and checked (allowed by CIDR here), with the Host header still naming the URL's host."""
    receiver = Receiver()
    try:
        resolve = Resolver()
        sink = RawWebhookSink(f"http://hooks.example:{receiver.port}/hook", restricted=True,
                              allow=AllowList.parse("127.0.0.0/8"), resolve=resolve)
        for i in range(3):
            sink.emit({"type": "log", "data": {"i": i}})
        assert sink.close(10) is True and sink.sent == 3
        assert resolve.calls == 3  # one lookup per connection, checked before it is used
        assert {r["headers"]["Host"] for r in receiver.requests} == {f"hooks.example:{receiver.port}"}
    finally:
        receiver.stop()


def test_make_sink_follows_the_jobs_flag() -> None:
    hook = '[{"webhook_type": "raw", "callback_url": "http://127.0.0.1:9/hook"}]'
    restricted = make_sink(SimpleNamespace(webhook_config=hook, webhook_restricted=True))
    plain = make_sink(SimpleNamespace(webhook_config=hook, webhook_restricted=False))
    try:
        assert restricted.restricted is True and plain.restricted is False
    finally:
        restricted.close(1)
        plain.close(1)
