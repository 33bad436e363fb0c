"""The wire translation: every internal event type becomes SimpleTuner's envelope and reads back exactly."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.events import EventEmitter, JsonlEventLog
from simpletuner_core.events.log import JsonlMirror, read_events
from simpletuner_core.events.types import EVENT_TYPES, Event
from simpletuner_core.events.wire import STAGE_KEYS, WIRE_TYPES, from_wire, is_wire, to_wire
from simpletuner_core.training.stages import Stages

ENVELOPE = {"id", "type", "severity", "title", "message", "job_id", "timestamp", "images", "videos", "audios",
            "headline", "body", "message_type", "data"}
SEVERITIES = {"info", "success", "warning", "error", "critical"}
IMAGE = {"src": "data:image/png;base64,AAAA", "mime_type": "image/png"}

#: One realistic payload per internal type (and the eval-metric type another part of the trainer emits).
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "job.queued": ("info", {}),
    "job.started": ("info", {"pid": 12, "config_hash": "abc", "job_dir": "/jobs/j"}),
    "job.running": ("info", {"step": 0, "total": 10, "steps_per_epoch": 5, "seed": 1, "message": "training"}),
    "job.stage": ("info", {"stage": "init_vae_cache", "status": "completed", "label": "Caching VAE latents",
                           "message": "encoding 4 images"}),
    "job.plan": ("info", {"plan": {"datasets": []}}),
    "training.status": ("info", {"step": 3, "total": 10, "epoch": 1, "percent": 30.0, "loss": 0.25, "lr": 1e-4,
                                 "rate": 2.0, "eta_seconds": 3.5}),
    "training.summary": ("info", {"step": 10, "total": 10, "epochs": 2, "final_loss": 0.2, "mean_loss": 0.3,
                                  "seconds": 4.0, "output_dir": "/out"}),
    "training.metric": ("info", {"step": 4, "name": "eval_loss", "value": 0.125}),
    "checkpoint.saved": ("info", {"step": 4, "path": "/out/checkpoint-4"}),
    "validation.started": ("info", {"step": 4, "forced": False}),
    "validation.image": ("info", {"title": "Validation (step 4): red", "body": "a red square", "step": 4,
                                  "global_step": 4, "prompt": "a red square", "validation_type": "final",
                                  "resolution": [64, 64], "images": [IMAGE]}),
    "hook.script": ("warning", {"hook": "post_checkpoint_script", "argv": ["x"], "returncode": 1,
                                "timed_out": False, "seconds": 0.1, "output": "", "background": False,
                                "message": "post_checkpoint_script exited 1"}),
    "publish.completed": ("info", {"publisher": "local", "kind": "checkpoint", "step": 4, "path": "/out/c",
                                   "remote": "/pub/c", "seconds": 0.2}),
    "publish.failed": ("warning", {"publisher": "hub", "kind": "final", "step": 10, "path": "/out",
                                   "error": "403", "message": "upload refused"}),
    "job.completed": ("info", {"step": 10, "output_dir": "/out", "files": [], "published": []}),
    "job.failed": ("error", {"reason": "CUDA out of memory", "resumable": True}),
    "job.cancelled": ("warning", {"step": 5}),
    "job.stopped": ("info", {"step": 5, "checkpoint": "/out/checkpoint-5"}),
    "log": ("info", {"message": "latent cache: 4 encoded"}),
}


def sample(kind: str, index: int = 7) -> Event:
    level, data = SAMPLES[kind]
    return Event(kind, "job-1", data, id=index, timestamp=1700000000.123456, level=level)


def test_every_internal_type_has_a_sample() -> None:
    assert set(EVENT_TYPES) <= set(SAMPLES)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_internal_type_maps_to_the_envelope_and_back(kind: str) -> None:
    event = sample(kind)
    wire = json.loads(json.dumps(event.to_dict()))  # what actually crosses a wire
    assert ENVELOPE <= set(wire)
    assert wire["type"] in WIRE_TYPES and wire["message_type"] == wire["type"]
    assert wire["severity"] in SEVERITIES
    assert wire["id"] == "7" and wire["job_id"] == "job-1"
    assert (wire["headline"], wire["body"]) == (wire["title"], wire["message"]) and wire["title"]
    assert datetime.fromisoformat(wire["timestamp"]).timestamp() == pytest.approx(event.timestamp)
    assert all(isinstance(wire[k], list) for k in ("images", "videos", "audios"))
    assert wire["event_type"] == kind and is_wire(wire)
    assert Event.from_dict(wire) == event == from_wire(wire)


def test_the_types_and_blocks_simpletuner_readers_look_for() -> None:
    wire = {kind: to_wire(sample(kind)) for kind in SAMPLES}
    progress = wire["training.status"]
    assert progress["type"] == "training.progress"
    assert progress["progress"] == {"label": "Step 3/10", "current": 3, "total": 10, "percent": 30.0,
                                    "eta_seconds": 3.5, "metrics": {"loss": 0.25, "learning_rate": 1e-4,
                                                                    "epoch": 1, "iterations_per_second": 2.0}}
    statuses = {kind: (wire[kind]["type"], wire[kind]["status"]) for kind in
                ("job.queued", "job.started", "job.running", "job.completed", "job.failed", "job.cancelled",
                 "job.stopped")}
    assert statuses == {"job.queued": ("training.status", "queued"), "job.started": ("training.status", "starting"),
                        "job.running": ("training.status", "running"),
                        "job.completed": ("training.status", "completed"),
                        "job.failed": ("training.status", "error"),
                        "job.cancelled": ("training.status", "cancelled"),
                        "job.stopped": ("training.status", "cancelled")}
    assert wire["job.failed"]["severity"] == "error" and wire["job.failed"]["message"] == "CUDA out of memory"
    assert wire["job.completed"]["severity"] == "success"
    assert wire["training.summary"]["type"] == "training.summary"
    stage = wire["job.stage"]
    assert stage["type"] == "lifecycle.stage" and stage["severity"] == "success"
    assert stage["stage"] == {"key": "init_vae_cache", "status": "completed", "label": "Caching VAE latents",
                              "progress": {"percent": 100, "current": 1, "total": 1},
                              "metadata": {"message": "encoding 4 images"}}
    checkpoint = wire["checkpoint.saved"]
    assert checkpoint["type"] == "training.checkpoint"
    assert checkpoint["checkpoint"] == {"path": "/out/checkpoint-4", "label": "checkpoint-4", "is_final": False,
                                        "extra": {"step": 4}}
    image = wire["validation.image"]
    assert image["type"] == "validation.image" and image["images"] == [IMAGE] and "images" not in image["data"]
    assert image["title"] == "Validation (step 4): red" and image["message"] == "a red square"
    assert image["validation"]["assets"] == [{"url": IMAGE["src"], "kind": "image", "alt": None}]
    assert image["validation"]["prompt"] == "a red square"
    assert wire["validation.started"]["type"] == "training.validation"
    metric = wire["training.metric"]
    assert metric["type"] == "training.metric" and metric["progress"]["metrics"] == {"eval_loss": 0.125}
    assert metric["data"] == {"step": 4, "name": "eval_loss", "value": 0.125}
    assert wire["job.plan"]["type"] == "debug"
    for kind in ("log", "hook.script", "publish.completed", "publish.failed"):
        assert wire[kind]["type"] == "notification"
    assert wire["hook.script"]["severity"] == "warning"
    assert wire["publish.failed"]["message"] == "upload refused"


def test_log_levels_choose_type_and_severity() -> None:
    def wire(level: str) -> dict[str, Any]:
        return to_wire(Event("log", "j", {"message": "m"}, level=level))

    assert (wire("debug")["type"], wire("debug")["severity"]) == ("debug", "info")
    assert [wire(level)["severity"] for level in ("info", "warning", "error")] == ["info", "warning", "error"]
    assert {wire(level)["type"] for level in ("info", "warning", "error")} == {"notification"}


def test_metrics_as_named_values_and_unknown_types() -> None:
    several = to_wire(Event("training.metric", "j", {"step": 8, "eval_loss": 0.5, "clip_score": 0.25}))
    assert several["progress"]["metrics"] == {"eval_loss": 0.5, "clip_score": 0.25}
    unknown = Event("future.thing", "j", {"x": 1}, id=3)
    assert to_wire(unknown)["type"] == "notification" and Event.from_dict(to_wire(unknown)) == unknown


def test_a_simpletuner_envelope_without_our_extras_reads_as_its_wire_type() -> None:
    foreign = {"id": "5", "type": "training.progress", "severity": "info", "title": "t", "message": "m",
               "job_id": "j", "timestamp": "2024-01-01T00:00:00+00:00", "images": [], "videos": [], "audios": [],
               "data": {"step": 2}}
    event = Event.from_dict(foreign)
    assert (event.type, event.id, event.data, event.timestamp) == ("training.progress", 5, {"step": 2},
                                                                    1704067200.0)


def test_jsonl_files_hold_the_wire_form_and_read_back(tmp_path: Path) -> None:
    log = JsonlEventLog(tmp_path / "store.jsonl")
    mirror = JsonlMirror(tmp_path / "events.jsonl")
    emitter = EventEmitter("job-1", log, [mirror])
    emitted = [emitter.emit(kind, level=SAMPLES[kind][0], **SAMPLES[kind][1]) for kind in SAMPLES]
    emitter.close()
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [str(i) for i in range(1, len(SAMPLES) + 1)]
    assert all(ENVELOPE <= set(line) for line in lines)
    assert read_events(tmp_path / "events.jsonl") == emitted == read_events(tmp_path / "store.jsonl")
    assert [e.id for e in read_events(tmp_path / "events.jsonl", after_id=len(SAMPLES) - 2)] == [len(SAMPLES) - 1, len(SAMPLES)]


class _ListStore:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self, event: Event) -> Event:
        self.events.append(event)
        return event

    def close(self) -> None:
        pass


def test_stages_run_then_complete_or_fail() -> None:
    store = _ListStore()
    stages = Stages(EventEmitter("j", store))
    with pytest.raises(RuntimeError), stages:
        stages.begin("init_data_backend", "planning")
        stages.begin("init_load_base_model", "loading")  # ends the previous stage
        stages.close()
        with stages.scoped("checkpoint_save", "checkpoint-2", step=2):
            pass
        stages.begin("training_abort", "stopping")
        with stages.scoped("checkpoint_save", "checkpoint-3", step=3):  # leaves training_abort open
            pass
        stages.begin("model_save", "writing")
        raise RuntimeError("disk full")
    seen = [(e.data["stage"], e.data["status"]) for e in store.events]
    assert seen == [("init_data_backend", "running"), ("init_data_backend", "completed"),
                    ("init_load_base_model", "running"), ("init_load_base_model", "completed"),
                    ("checkpoint_save", "running"), ("checkpoint_save", "completed"),
                    ("training_abort", "running"), ("checkpoint_save", "running"), ("checkpoint_save", "completed"),
                    ("training_abort", "completed"), ("model_save", "running"), ("model_save", "failed")]
    failed = store.events[-1]
    assert failed.level == "error" and failed.data["error"] == "RuntimeError: disk full"
    assert to_wire(failed)["stage"]["status"] == "failed" and to_wire(failed)["severity"] == "error"
    assert {e.data["stage"] for e in store.events} <= set(STAGE_KEYS)


def test_a_scoped_stage_that_raises_is_failed() -> None:
    store = _ListStore()
    stages = Stages(EventEmitter("j", store))
    with pytest.raises(OSError), stages.scoped("checkpoint_save", "checkpoint-1"):
        raise OSError("no space")
    assert [e.data["status"] for e in store.events] == ["running", "failed"]


def test_the_console_bar_prints_a_stage_when_it_starts_or_fails() -> None:
    import io

    from simpletuner_core.events.progress import ProgressPrinter

    stream = io.StringIO()
    bar = ProgressPrinter(stream)
    for status in ("running", "completed"):
        bar.emit(Event("job.stage", "j", {"stage": "init_vae_cache", "status": status, "message": "encoding 4"}))
    bar.emit(Event("job.running", "j", {"message": "training 6 steps"}))
    bar.emit(Event("job.stage", "j", {"stage": "model_save", "status": "failed", "error": "OSError: full"}))
    assert stream.getvalue().splitlines() == ["[init_vae_cache] encoding 4", "[training] training 6 steps",
                                              "[model_save] failed: OSError: full"]
