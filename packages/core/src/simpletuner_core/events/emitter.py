"""The one interface the trainer uses to publish events: ``emitter.emit(type, **data)``.

The store (the job's log) assigns ids; every other sink sees the stored event. A failing sink is
reported once as a ``log`` event and never stops training.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Protocol

from simpletuner_core.events.types import Event


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class EventStore(Protocol):
    def append(self, event: Event) -> Event: ...

    def close(self) -> None: ...


class EventEmitter:
    def __init__(self, job_id: str, store: EventStore, sinks: list[EventSink] | None = None) -> None:
        self.job_id = job_id
        self.store = store
        self.sinks = list(sinks or [])
        self._broken: set[int] = set()
        self._lock = threading.RLock()  # hook scripts and uploads report from their own threads

    def add_sink(self, sink: EventSink) -> None:
        self.sinks.append(sink)

    def emit(self, event_type: str, level: str = "info", **data: Any) -> Event:
        with self._lock:
            return self._emit(event_type, level, data)

    def _emit(self, event_type: str, level: str, data: dict[str, Any]) -> Event:
        event = self.store.append(Event(type=event_type, job_id=self.job_id, data=data, level=level))
        for index, sink in enumerate(self.sinks):
            try:
                sink.emit(event)
            except Exception as exc:  # a sink must never break training
                if index not in self._broken:
                    self._broken.add(index)
                    note = f"event sink {type(sink).__name__} failed: {exc}; further errors suppressed"
                    print(note, file=sys.stderr)
                    self.store.append(Event(type="log", job_id=self.job_id, level="warning",
                                            data={"message": note}))
        return event

    def log(self, message: str, level: str = "info") -> Event:
        return self.emit("log", level=level, message=message)

    def thread_done(self) -> None:
        """A helper thread that emitted events is ending: let the store release that thread's resources."""
        release = getattr(self.store, "close_thread", None)
        if release is not None:
            release()

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                print(f"closing event sink {type(sink).__name__} failed: {exc}", file=sys.stderr)
        self.store.close()
