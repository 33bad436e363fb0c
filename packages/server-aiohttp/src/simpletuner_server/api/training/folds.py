"""Per-job state folded from a job's events, kept for the jobs read last so a reload or poll reads only newer
events: a 10,000-step run's curve, or the listing of validation images whose events carry megabytes of inline
PNGs, is decoded once per server rather than on every request of the job page.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from simpletuner_core.events.types import Event
from simpletuner_core.jobs.store import Store

T = TypeVar("T")


class Fold(Protocol):
    last_id: int

    def load(self, store: Store, job_id: str, after_id: int, upto_id: int) -> None:
        """Take in the job's events with ``after_id < id <= upto_id`` (the caller then moves ``last_id``), reading
        only what the fold needs: whole events of a few types, or a few fields of each."""
        ...


def events_between(store: Store, job_id: str, types: tuple[str, ...], after_id: int, upto_id: int) -> list[Event]:
    """The job's events of ``types`` with ``after_id < id <= upto_id``, oldest first."""
    return [event for event in store.read_events_of_types(job_id, types, after_id=after_id) if event.id <= upto_id]


F = TypeVar("F", bound=Fold)


class JobFolds(Generic[F]):
    """``fold_of()`` per job for the ``size`` jobs read last; thread-safe (requests read on worker threads)."""

    def __init__(self, fold_of: Callable[[], F], size: int = 16) -> None:
        self.fold_of, self.size = fold_of, size
        self.jobs: OrderedDict[str, F] = OrderedDict()
        self.lock = threading.Lock()

    def read(self, store: Store, job_id: str, view: Callable[[F], T]) -> tuple[int, T]:
        """(the job's last event id, ``view`` of its fold) as of one moment: events written after that id are
        left for the next call, so a client resuming the event stream from it sees each later event once."""
        with self.lock:
            fold = self.jobs.pop(job_id, None) or self.fold_of()
            self.jobs[job_id] = fold
            while len(self.jobs) > self.size:
                self.jobs.popitem(last=False)
            last = store.last_event_id(job_id)
            if last > fold.last_id:
                fold.load(store, job_id, fold.last_id, last)
                fold.last_id = last
            return fold.last_id, view(fold)
