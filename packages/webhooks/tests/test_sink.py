"""The webhook sink against a real HTTP receiver on 127.0.0.1: order, shape, retries, bounds, config."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook_receiver import Receiver

from simpletuner_core.plugins import get_registry, reset_plugin_manager
from simpletuner_webhooks import FanoutSink, RawWebhookSink, parse_webhook_config
from simpletuner_webhooks.plugin import make_sink

#: SimpleTuner's envelope, then our extras (internal type, level, schema version, unix time).
ENVELOPE_KEYS = {"id", "type", "severity", "title", "message", "job_id", "timestamp", "images", "videos", "audios",
                 "headline", "body", "message_type", "data", "event_type", "level", "version", "unix_timestamp"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    reset_plugin_manager()
    yield
    reset_plugin_manager()


class FakeEvent:
    """Stands in for any event object exposing ``to_dict()``."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        return dict(self.fields)


def test_events_arrive_in_order_with_the_envelope_shape(receiver: Receiver) -> None:
    from simpletuner_core.events import Event

    sink = RawWebhookSink(receiver.url, job_id="job-dir-name")
    sink.emit(Event(type="job.started", job_id="j1", data={"pid": 1}, id=1, level="info"))
    for step in range(1, 11):
        sink.emit(
            FakeEvent(type="training.status", job_id="j1", id=step + 1, timestamp=1.5, data={"step": step})
        )
    sink.emit({"type": "log", "data": {"message": "plain dict"}})
    assert sink.close(30) is True

    assert [p["event_type"] for p in receiver.posts] == ["job.started"] + ["training.status"] * 10 + ["log"]
    assert all(ENVELOPE_KEYS <= set(p) for p in receiver.posts)
    assert [p["type"] for p in receiver.posts] == ["training.status"] + ["training.progress"] * 10 + ["notification"]
    assert receiver.posts[0]["status"] == "starting" and receiver.posts[1]["progress"]["current"] == 1
    assert [p["data"]["step"] for p in receiver.posts[1:11]] == list(range(1, 11))
    assert receiver.posts[0]["data"] == {"pid": 1} and receiver.posts[0]["job_id"] == "j1"
    assert receiver.posts[1]["unix_timestamp"] == 1.5 and receiver.posts[1]["id"] == "2"
    assert receiver.posts[1]["timestamp"] == "1970-01-01T00:00:01.500000+00:00"
    last = receiver.posts[-1]
    assert last["job_id"] == "job-dir-name" and last["id"] and isinstance(last["unix_timestamp"], float)
    assert set(receiver.content_types) == {"application/json"}
    assert (sink.sent, sink.failed, sink.dropped) == (12, 0, 0)


def test_server_errors_are_retried_until_success() -> None:
    receiver = Receiver(statuses=[500, 503])
    try:
        sink = RawWebhookSink(receiver.url, backoff=0.01)
        sink.emit({"type": "job.completed", "data": {"step": 3}})
        assert sink.close(30) is True
        assert receiver.hits == 3
        assert [p["event_type"] for p in receiver.posts] == ["job.completed"]
        assert (sink.sent, sink.failed) == (1, 0)
    finally:
        receiver.stop()


def test_client_errors_are_not_retried() -> None:
    receiver = Receiver(statuses=[400])
    try:
        sink = RawWebhookSink(receiver.url, backoff=0.01)
        sink.emit({"type": "log", "data": {}})
        assert sink.close(30) is True
        assert receiver.hits == 1 and receiver.posts == []
        assert (sink.sent, sink.failed) == (0, 1)
    finally:
        receiver.stop()


def test_events_below_log_level_are_skipped(receiver: Receiver) -> None:
    sink = RawWebhookSink(receiver.url, log_level="warning")
    for level in ("debug", "info", None, "warning", "error"):
        sink.emit({"type": "log", "level": level, "data": {"level": level}})
    assert sink.close(30) is True
    assert [p["data"]["level"] for p in receiver.posts] == ["warning", "error"]
    assert sink.filtered == 3


def test_full_queue_drops_oldest_and_counts() -> None:
    receiver = Receiver(hold=True)
    try:
        sink = RawWebhookSink(receiver.url, max_queue=2)
        sink.emit({"type": "e0"})
        assert receiver.wait_hits(1)  # worker now blocked on e0's request
        for i in range(1, 6):
            sink.emit({"type": f"e{i}"})
        assert sink.dropped == 3 and sink.pending == 2
        receiver.release.set()
        assert sink.close(30) is True
        assert [p["event_type"] for p in receiver.posts] == ["e0", "e4", "e5"]
    finally:
        receiver.release.set()
        receiver.stop()


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_dead_receiver_never_blocks_emit_and_failures_are_counted() -> None:
    sink = RawWebhookSink(_dead_url(), backoff=0.01, timeout=1.0)
    started = time.monotonic()
    for i in range(5):
        sink.emit({"type": "log", "data": {"i": i}})
    assert time.monotonic() - started < 2.0  # generous for a loaded machine: emit itself never waits on I/O
    assert sink.close(30) is True
    # three events exhaust their retries, then the breaker opens and the rest are skipped without a request
    assert (sink.sent, sink.failed, sink.skipped, sink.dropped) == (0, 3, 2, 0)
    assert sink.attempts == 3 * 3 and sink.state == "down"


def test_close_returns_within_its_bound_when_deliveries_keep_failing() -> None:
    sink = RawWebhookSink(_dead_url(), backoff=0.5, timeout=1.0)
    for i in range(10):
        sink.emit({"type": "log", "data": {"i": i}})
    started = time.monotonic()
    assert sink.close(0.3) is False
    assert time.monotonic() - started < 3.0  # bounded by its timeout, not by the 10 failing deliveries
    deadline = time.monotonic() + 10  # the in-flight event is abandoned at its next backoff
    while sink.failed + sink.dropped + sink.skipped < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.sent == 0 and sink.failed + sink.dropped + sink.skipped == 10
    sink.emit({"type": "late"})  # after close: counted, never queued
    assert sink.pending == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"webhook_type": "slack", "callback_url": "https://x.test"}', "supported webhook types: raw, discord"),
        ([{"callback_url": "https://x.test"}], r"webhook_type is missing; supported webhook types: raw"),
        ('{"webhook_type": "raw", "callback_url": "https://x.test", "max_attempts": 0}', "max_attempts"),
        ('{"webhook_type": "raw", "callback_url": "https://x.test", "secret_env": "ST_NO_SUCH_VAR"}',
         "is not set in the environment"),
        ('[{"webhook_type": "raw", "callback_url": "ftp://x.test/in"}]', "http:// or https://"),
        ('{"webhook_type": "raw"}', "callback_url is required"),
        ('{"webhook_type": "raw", "callback_url": "https://x.test", "log_level": "loud"}', "log_level"),
        (
            '{"webhook_type": "raw", "callback_url": "https://x.test", "ssl_no_verify": "yes"}',
            "ssl_no_verify",
        ),
        ('{"webhook_type": "raw", ', "not valid JSON"),
        ("not json at all", "not valid JSON"),
        ("[]", "no webhooks"),
        ("[1]", r"webhook_config\[0\] must be a JSON object"),
    ],
)
def test_bad_webhook_config_is_a_clear_value_error(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_webhook_config(value)


def test_webhook_config_forms(tmp_path: Path) -> None:
    one = {"webhook_type": "raw", "callback_url": "https://hooks.test/a", "log_level": "ERROR"}
    two = {
        "webhook_type": "raw",
        "callback_url": "http://hooks.test/b",
        "ssl_no_verify": True,
        "message_prefix": "x",
    }
    assert [t.log_level for t in parse_webhook_config(json.dumps(one))] == ["error"]
    assert len(parse_webhook_config([one, two])) == 2
    path = tmp_path / "hooks.json"
    path.write_text(json.dumps([two]))
    (target,) = parse_webhook_config(str(path))
    assert (target.callback_url, target.ssl_no_verify, target.log_level) == (
        "http://hooks.test/b",
        True,
        "info",
    )


def test_factory_is_inactive_without_webhook_config(tmp_path: Path) -> None:
    assert make_sink(SimpleNamespace(), tmp_path) is None
    assert make_sink(SimpleNamespace(webhook_config=None), tmp_path) is None
    assert make_sink(SimpleNamespace(webhook_config=""), tmp_path) is None


def test_factory_builds_sinks_from_config(tmp_path: Path) -> None:
    target = {"webhook_type": "raw", "callback_url": "http://127.0.0.1:9/hook"}
    single = make_sink(SimpleNamespace(webhook_config=json.dumps(target)), tmp_path / "job-7")
    assert isinstance(single, RawWebhookSink) and single.job_id == "job-7"
    single.close(1)
    many = make_sink(SimpleNamespace(webhook_config=[target, target]), tmp_path)
    assert isinstance(many, FanoutSink) and len(many.sinks) == 2
    many.close(1)
    with pytest.raises(ValueError, match="supported webhook types"):
        make_sink(SimpleNamespace(webhook_config='{"webhook_type": "slack"}'), tmp_path)


def test_plugin_is_discoverable_through_the_registry(receiver: Receiver, tmp_path: Path) -> None:
    registry = get_registry()
    assert "webhook" in registry.event_sinks
    assert registry.event_sinks.owner("webhook") == "webhooks"
    spec = registry.event_sinks.get("webhook")
    assert spec.factory(SimpleNamespace(webhook_config=None), tmp_path) is None
    sink = spec.factory(
        SimpleNamespace(webhook_config=[{"webhook_type": "raw", "callback_url": receiver.url}]), tmp_path
    )
    sink.emit({"type": "job.queued"})
    assert sink.close(30) is True
    assert [p["event_type"] for p in receiver.posts] == ["job.queued"]


def test_webhooks_never_import_torch() -> None:
    code = """
        import sys
        from types import SimpleNamespace
        from simpletuner_core.plugins import get_registry
        spec = get_registry().event_sinks.get("webhook")
        hook = '{"webhook_type": "raw", "callback_url": "http://127.0.0.1:9/"}'
        sink = spec.factory(SimpleNamespace(webhook_config=hook), None)
        sink.emit({"type": "log"})
        sink.close(0.1)
        leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not leaked, leaked
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
