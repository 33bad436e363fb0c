"""Per-job, append-only event log on disk (CLI mode). One JSON object per line, ids strictly increasing.

A reader resuming from id ``k`` gets exactly the events after ``k``. A torn last line (crash mid-write) is ignored
on read and overwritten cleanly on the next append.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import attrs

from simpletuner_core.events.types import Event


class JsonlEventLog:
    """Appends events with monotonically increasing ids; safe for one writer process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._last_id = max((e.id for e in read_events(self.path)), default=0)
        self._repair_tail()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)

    @property
    def last_id(self) -> int:
        return self._last_id

    def append(self, event: Event) -> Event:
        with self._lock:
            self._last_id += 1
            stored = attrs.evolve(event, id=self._last_id)
            self._fh.write(json.dumps(stored.to_dict(), separators=(",", ":"), default=str) + "\n")
            self._fh.flush()
            return stored

    def sync(self) -> None:
        with self._lock:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def read(self, after_id: int = 0) -> list[Event]:
        return read_events(self.path, after_id)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                self._fh.close()


def read_events(path: Path, after_id: int = 0) -> list[Event]:
    """Events with id > ``after_id``; readers never need a writer handle."""
    if not Path(path).exists():
        return []
    out: list[Event] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn write
            try:
                event = Event.from_dict(json.loads(line))
            except (ValueError, KeyError):
                continue
            if event.id > after_id:
                out.append(event)
    return out


class JsonlMirror:
    """An event sink that appends stored events verbatim (ids from the store) to a file users can ``tail -f``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def emit(self, event: Event) -> None:
        self._fh.write(json.dumps(event.to_dict(), separators=(",", ":"), default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
