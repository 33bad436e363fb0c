"""Delivery behaviour against a real loopback receiver: circuit breaker, HMAC, throttling, Discord messages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook_receiver import Receiver

from simpletuner_webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DiscordWebhookSink,
    RawWebhookSink,
    parse_webhook_config,
)
from simpletuner_webhooks.plugin import make_sink

SINK_LOGGER = "simpletuner_webhooks.sink"


def _png(size: tuple[int, int] = (16, 8)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_breaker_goes_down_then_up_with_one_log_line_each(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(statuses=[503] * 4)  # two events x two attempts fail, then the receiver recovers
    caplog.set_level(logging.DEBUG, logger=SINK_LOGGER)
    try:
        sink = RawWebhookSink(receiver.url, max_attempts=2, backoff=0.0, failure_threshold=2, cooldown=0.0)
        for i in range(5):
            sink.emit({"type": "log", "data": {"i": i}})
        assert sink.close(30) is True
        assert receiver.hits == 4 + 3  # the third event probes (cooldown 0) and succeeds; 4 and 5 follow
        assert [p["data"]["i"] for p in receiver.posts] == [2, 3, 4]
        assert (sink.sent, sink.failed, sink.state) == (3, 2, "up")
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        assert len(lines) == 2, lines
        assert "receiver is down" in lines[0] and "HTTP 503" in lines[0]
        assert "receiver is back up" in lines[1]
        assert "/hook" not in " ".join(lines)  # URLs are logged without their path (Discord puts tokens there)
    finally:
        receiver.stop()


def test_hmac_signature_over_timestamp_and_body() -> None:
    receiver = Receiver()
    try:
        signed = RawWebhookSink(receiver.url, secret="s3cret")
        signed.emit({"type": "job.started", "data": {"pid": 1}})
        assert signed.close(30)
        plain = RawWebhookSink(receiver.url)
        plain.emit({"type": "job.started", "data": {}})
        assert plain.close(30)
        first, second = receiver.requests
        stamp = first["headers"][TIMESTAMP_HEADER]
        expected = hmac.new(b"s3cret", stamp.encode() + b"." + first["raw"], hashlib.sha256).hexdigest()
        assert first["headers"][SIGNATURE_HEADER] == f"sha256={expected}"
        assert abs(int(stamp) - time.time()) < 600  # a current timestamp: receivers can refuse replays

        def verifies(raw: bytes, timestamp: str) -> bool:  # what a receiver does with the two headers
            mac = hmac.new(b"s3cret", timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
            return hmac.compare_digest(first["headers"][SIGNATURE_HEADER], f"sha256={mac}")

        assert verifies(first["raw"], stamp)
        assert not verifies(first["raw"] + b" ", stamp)  # the body is covered
        assert not verifies(first["raw"], str(int(stamp) + 1))  # and so is the timestamp
        assert SIGNATURE_HEADER not in second["headers"]
    finally:
        receiver.stop()


def test_secret_from_environment_is_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ST_HOOK_SECRET", "from-env")
    (target,) = parse_webhook_config(
        [{"webhook_type": "raw", "callback_url": "http://127.0.0.1:9/h", "secret_env": "ST_HOOK_SECRET"}])
    assert target.secret == "from-env" and "from-env" not in repr(target)


def test_reporting_interval_throttles_status_but_keeps_the_last_step() -> None:
    receiver = Receiver()
    try:
        sink = make_sink(SimpleNamespace(webhook_reporting_interval=3600, webhook_config=[
            {"webhook_type": "raw", "callback_url": receiver.url}]), None)
        for step in range(1, 11):
            sink.emit({"type": "training.status", "data": {"step": step, "total": 10}})
        sink.emit({"type": "checkpoint.saved", "data": {"step": 10}})
        assert sink.close(30)
        assert [(p["event_type"], p["data"]["step"]) for p in receiver.posts] == [
            ("training.status", 1), ("training.status", 10), ("checkpoint.saved", 10)]
        assert sink.throttled == 8
    finally:
        receiver.stop()


def test_validation_image_payload_has_the_tutorial_shape() -> None:
    from simpletuner_core.events import Event

    receiver = Receiver()
    try:
        sink = RawWebhookSink(receiver.url)
        image = {"src": _png(), "mime_type": "image/png"}
        sink.emit(Event(type="validation.image", job_id="j1", id=9, data={
            "title": "Validation (step 5/20): night bench", "body": "night bench shot of <token>", "step": 5,
            "timestep": 563.0, "resolution": [16, 8], "validation_type": "intermediary",
            "prompt": "night bench shot of <token>", "step_label": "5/20", "images": [image]}))
        assert sink.close(30)
        (payload,) = receiver.posts
        assert payload["type"] == "validation.image" and payload["version"] == 1 and payload["job_id"] == "j1"
        assert payload["title"] == payload["headline"] == "Validation (step 5/20): night bench"
        assert payload["body"] == payload["message"] == "night bench shot of <token>"
        assert payload["images"] == [image] and "images" not in payload["data"]
        assert payload["validation"]["assets"] == [{"url": image["src"], "kind": "image", "alt": None}]
        assert payload["data"] == {"title": "Validation (step 5/20): night bench",
                                   "body": "night bench shot of <token>", "step": 5, "timestep": 563.0, "resolution": [16, 8],
                                   "validation_type": "intermediary", "prompt": "night bench shot of <token>",
                                   "step_label": "5/20"}
    finally:
        receiver.stop()


def test_discord_messages_embeds_and_image_attachments() -> None:
    from PIL import Image

    receiver = Receiver()
    try:
        sink = make_sink(SimpleNamespace(webhook_reporting_interval=None, webhook_config=[
            {"webhook_type": "discord", "callback_url": receiver.url, "message_prefix": "[toy] "}]), None)
        assert isinstance(sink, DiscordWebhookSink)
        sink.emit({"type": "training.status", "data": {"step": 1, "total": 9, "percent": 11.1, "loss": 0.5,
                                                       "eta_seconds": 75}})
        sink.emit({"type": "training.status", "data": {"step": 2, "total": 9}})  # within the 60 s default
        sink.emit({"type": "log", "level": "info", "data": {"message": "chatter"}})  # not for a channel
        sink.emit({"type": "checkpoint.saved", "data": {"step": 3, "path": "/out/checkpoint-3"}})
        sink.emit({"type": "validation.image", "data": {"title": "Validation (step 3): red", "body": "a red square",
                                                        "step": 3, "images": [{"src": _png((16, 8)),
                                                                               "mime_type": "image/png"}]}})
        assert sink.close(30)
        status, checkpoint, image = receiver.requests
        assert status["content_type"] == "application/json"
        assert status["json"]["content"] == "[toy] Step 1/9 (11.1%)"
        assert status["json"]["embeds"][0]["description"] == "loss 0.5000, ETA 1m15s"
        assert checkpoint["json"]["embeds"][0]["title"] == "Checkpoint saved at step 3"
        assert image["content_type"] == "multipart/form-data"
        assert image["json"]["embeds"][0]["image"] == {"url": "attachment://image.png"}
        part = image["parts"]["files[0]"]
        assert part["filename"] == "image.png" and part["content_type"] == "image/png"
        assert Image.open(io.BytesIO(part["data"])).size == (16, 8)
        assert (sink.throttled, sink.filtered) == (1, 1)
        assert all(len(json.dumps(r["json"]["content"])) < 2000 for r in receiver.requests)
    finally:
        receiver.stop()


def test_discord_hears_stages_start_and_fail_not_complete() -> None:
    receiver = Receiver()
    try:
        sink = make_sink(SimpleNamespace(webhook_reporting_interval=None, webhook_config=[
            {"webhook_type": "discord", "callback_url": receiver.url}]), None)
        for status, level in (("running", "info"), ("completed", "info"), ("failed", "error")):
            sink.emit({"type": "job.stage", "level": level, "timestamp": 1700000000.0,
                       "data": {"stage": "init_vae_cache", "status": status, "label": "Caching VAE latents",
                                "message": "encoding 4 images", **({"error": "OSError: disk"} if level == "error"
                                                                    else {})}})
        assert sink.close(30)
        embeds = [r["json"]["embeds"][0] for r in receiver.requests]
        assert [e["title"] for e in embeds] == ["Stage: Caching VAE latents (running)",
                                                "Stage: Caching VAE latents (failed)"]
        assert embeds[1]["description"] == "OSError: disk" and embeds[1]["color"] == 0xE74C3C
        assert embeds[0]["timestamp"] == "2023-11-14T22:13:20+00:00" and sink.filtered == 1
    finally:
        receiver.stop()


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_credentials_in_the_url_reach_no_label_log_or_config_error(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(always=503)
    caplog.set_level(logging.DEBUG, logger=SINK_LOGGER)
    try:
        url = receiver.url.replace("http://", "http://alice:pw-s3cret@") + "?token=q-s3cret"
        sink = RawWebhookSink(url, max_attempts=1, backoff=0.0, failure_threshold=1, cooldown=3600)
        sink.emit({"type": "log", "data": {}})
        assert sink.close(30) is True
        assert sink.label == f"raw webhook http://127.0.0.1:{receiver.port}"
        assert receiver.requests[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(
            b"alice:pw-s3cret").decode()  # the userinfo is sent as Basic auth, not as part of the URL
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "receiver is down" in logged
        assert "s3cret" not in logged and "alice" not in logged
    finally:
        receiver.stop()
    bad = {"webhook_type": "raw", "callback_url": "ftp://alice:pw-s3cret@hooks.test:2121/api/webhooks/1/t-s3cret"}
    with pytest.raises(ValueError, match="http:// or https://") as info:
        parse_webhook_config([bad])
    assert "ftp://hooks.test:2121" in str(info.value) and "s3cret" not in str(info.value)
    assert "alice" not in str(info.value)


def test_queue_bytes_are_bounded_and_status_updates_are_dropped_before_lifecycle_events() -> None:
    receiver = Receiver(hold=True)
    try:
        sink = RawWebhookSink(receiver.url, max_queue=1000, max_queue_bytes=6000)
        sink.emit({"type": "job.started", "data": {}})
        assert receiver.wait_hits(1)  # the worker is now blocked on job.started; everything else queues
        sink.emit({"type": "checkpoint.saved", "data": {"step": 1}})
        for step in range(20):
            sink.emit({"type": "training.status", "data": {"step": step, "pad": "x" * 200}})
        sink.emit({"type": "validation.image", "level": "info", "data": {"images": ["i" * 1200]}})
        sink.emit({"type": "job.completed", "data": {"step": 20}})
        assert sink._queued_bytes <= 6000
        kept_steps = sink.pending - 3
        assert 0 < kept_steps < 20 and sink.dropped == 20 - kept_steps
        receiver.release.set()
        assert sink.close(30) is True
        types = [p["event_type"] for p in receiver.posts]
        assert types[:2] == ["job.started", "checkpoint.saved"] and types[-2:] == ["validation.image", "job.completed"]
        steps = [p["data"]["step"] for p in receiver.posts if p["event_type"] == "training.status"]
        assert steps == list(range(20 - kept_steps, 20))  # the newest status updates survive
    finally:
        receiver.release.set()
        receiver.stop()


def test_count_bound_also_drops_status_updates_before_lifecycle_events() -> None:
    receiver = Receiver(hold=True)
    try:
        sink = RawWebhookSink(receiver.url, max_queue=2)
        sink.emit({"type": "job.started", "data": {}})
        assert receiver.wait_hits(1)
        sink.emit({"type": "checkpoint.saved", "data": {"step": 1}})
        sink.emit({"type": "training.status", "data": {"step": 1}})
        sink.emit({"type": "job.failed", "level": "error", "data": {"reason": "boom"}})
        sink.emit({"type": "training.status", "data": {"step": 2}})  # nothing lower to drop: it goes itself
        receiver.release.set()
        assert sink.close(30) is True
        assert [p["event_type"] for p in receiver.posts] == ["job.started", "checkpoint.saved", "job.failed"]
        assert sink.dropped == 2
    finally:
        receiver.release.set()
        receiver.stop()


def test_final_events_are_attempted_at_close_even_while_the_breaker_is_open() -> None:
    receiver = Receiver(statuses=[503, 503], hold=True)
    try:
        sink = RawWebhookSink(receiver.url, max_attempts=1, backoff=0.0, failure_threshold=2, cooldown=3600)
        sink.emit({"type": "log", "data": {"i": 1}})
        assert receiver.wait_hits(1)
        sink.emit({"type": "log", "data": {"i": 2}})  # the second failure opens the breaker
        sink.emit({"type": "log", "data": {"i": 3}})  # skipped: routine, and the receiver is down
        sink.emit({"type": "job.completed", "data": {"step": 9}})
        sink.emit({"type": "log", "level": "error", "data": {"i": 4}})
        closer = threading.Thread(target=sink.close, args=(30,), daemon=True)
        closer.start()
        assert _wait(lambda: sink._closing)
        receiver.release.set()
        closer.join(30)
        assert not closer.is_alive()
        assert [p["event_type"] for p in receiver.posts] == ["job.completed", "log"]
        assert receiver.posts[1]["data"] == {"i": 4}
        assert (sink.failed, sink.skipped, sink.sent) == (2, 1, 2)
    finally:
        receiver.release.set()
        receiver.stop()


def test_rate_limiting_does_not_open_the_breaker() -> None:
    receiver = Receiver(always=429)
    try:
        sink = RawWebhookSink(receiver.url, max_attempts=1, backoff=0.0, failure_threshold=1, cooldown=3600)
        for i in range(3):
            sink.emit({"type": "log", "data": {"i": i}})
        assert sink.close(30) is True
        assert sink.state == "up" and sink.skipped == 0
        assert receiver.hits == 3 and sink.failed == 3
    finally:
        receiver.stop()
