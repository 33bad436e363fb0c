"""Event log ids, replay after an id, torn writes, sink isolation and the progress bar."""

from __future__ import annotations

import io
from pathlib import Path

from simpletuner_core.events import EventEmitter, JsonlEventLog
from simpletuner_core.events.log import read_events
from simpletuner_core.events.progress import ProgressPrinter, format_eta
from simpletuner_core.events.types import Event


def test_ids_increase_and_readers_resume_after_an_id(tmp_path: Path) -> None:
    log = JsonlEventLog(tmp_path / "events.jsonl")
    emitter = EventEmitter("job1", log)
    for step in range(1, 6):
        emitter.emit("training.status", step=step)
    events = read_events(log.path)
    assert [e.id for e in events] == [1, 2, 3, 4, 5]
    assert [e.data["step"] for e in read_events(log.path, after_id=3)] == [4, 5]
    emitter.close()
    reopened = JsonlEventLog(tmp_path / "events.jsonl")  # a restarted writer continues the sequence
    assert reopened.append(Event("log", "job1", {"message": "again"})).id == 6
    reopened.close()


def test_torn_last_line_is_ignored_then_repaired(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = JsonlEventLog(path)
    log.append(Event("log", "j", {"message": "one"}))
    log.close()
    with open(path, "a") as fh:
        fh.write('{"id": 2, "type": "log", "da')  # crash mid-write
    assert [e.id for e in read_events(path)] == [1]
    log = JsonlEventLog(path)
    assert log.append(Event("log", "j", {"message": "two"})).id == 2
    log.close()
    assert [e.data["message"] for e in read_events(path)] == ["one", "two"]


def test_unknown_event_types_pass_through(tmp_path: Path) -> None:
    log = JsonlEventLog(tmp_path / "e.jsonl")
    log.append(Event("future.thing", "j", {"x": 1}, version=7))
    log.close()
    event = read_events(tmp_path / "e.jsonl")[0]
    assert event.type == "future.thing" and event.version == 7 and event.data == {"x": 1}


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: Event) -> None:
        self.calls += 1
        raise RuntimeError("receiver down")

    def close(self) -> None:
        pass


def test_a_failing_sink_never_stops_the_emitter_and_is_reported_once(tmp_path: Path) -> None:
    log = JsonlEventLog(tmp_path / "e.jsonl")
    broken = Broken()
    emitter = EventEmitter("j", log, [broken])
    for _ in range(3):
        emitter.emit("training.status", step=1)
    emitter.close()
    events = read_events(log.path)
    warnings = [e for e in events if e.type == "log" and e.level == "warning"]
    assert broken.calls == 3 and len(warnings) == 1 and "receiver down" in warnings[0].data["message"]


def test_progress_bar_lines() -> None:
    stream = io.StringIO()
    bar = ProgressPrinter(stream)
    for step in range(1, 11):
        bar.emit(Event("training.status", "j", {"step": step, "total": 10, "loss": 0.5, "rate": 2.0,
                                                "eta_seconds": 10 - step}))
    bar.emit(Event("checkpoint.saved", "j", {"step": 10, "path": "/x"}))
    text = stream.getvalue()
    assert "step 10/10 [########################] loss 0.5000 2.00 it/s ETA 00:00" in text
    assert "checkpoint saved at step 10: /x" in text
    assert format_eta(3725) == "1:02:05" and format_eta(None) == "--:--"


def test_older_internal_forms_still_read_back() -> None:
    """JSONL logs and stored events written before the wire form carry our type and the payload under data."""
    image = {"src": "data:image/png;base64,AAAA", "mime_type": "image/png"}
    event = Event("validation.image", "j", {"title": "Validation (step 5/20)", "body": "a prompt", "step": 5,
                                            "validation_type": "intermediary", "images": [image]}, id=7,
                  timestamp=12.5, level="info")
    everything_under_data = {"id": 7, "type": "validation.image", "job_id": "j", "timestamp": 12.5,
                             "level": "info", "version": 1, "data": event.data}
    lifted = {**everything_under_data, "title": "Validation (step 5/20)", "body": "a prompt", "images": [image],
              "data": {"step": 5, "validation_type": "intermediary"}}
    assert Event.from_dict(everything_under_data) == event
    assert Event.from_dict(lifted) == event
    assert Event.from_dict(event.to_dict()) == event
