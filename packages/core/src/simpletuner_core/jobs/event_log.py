"""A job's event log on the shared store: the trainer's ``EventStore`` and the readers' ``follow``.

Ids come from the database, so the server, the CLI and webhooks all resume from the same global sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs

from simpletuner_core.events.types import Event
from simpletuner_core.jobs.models import FINAL_STATES
from simpletuner_core.jobs.store import Store


class StoreEventLog:
    """``EventStore`` for one job: what an ``EventEmitter`` writes lands in the store under ``job_id``."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id

    def append(self, event: Event) -> Event:
        return self.store.append_event(attrs.evolve(event, job_id=self.job_id))

    def close(self) -> None:
        """Closes only this thread's connection: other threads (the server's handlers) keep theirs."""
        self.store.close()

    def close_thread(self) -> None:
        """A helper thread (hook script, upload) is done: close its connection."""
        self.store.close()


def follow(store: Store, job_id: str, after_id: int = 0, poll_timeout: float = 1.0,
           stop: Callable[[], bool] | None = None) -> Iterator[Event]:
    """Yield the job's events after ``after_id`` as they arrive.

    Ends when ``stop()`` is true, or once the job is final and everything written up to then was yielded
    (the state is read *before* the last drain, so events written before the job ended are never lost).
    """
    while stop is None or not stop():
        final = store.get_job(job_id).state in FINAL_STATES
        events = store.read_events(job_id, after_id) if final else store.wait_events(job_id, after_id,
                                                                                      poll_timeout)
        if final and not events:
            return
        for event in events:
            after_id = event.id
            yield event


def run_seed(store: Store, job_id: str, page: int = 200) -> int | None:
    """The seed job ``job_id`` trained with, from its ``job.running`` event (drawn when its config set none).

    That event precedes the first step, so the scan stops at the first ``training.status``: a long log is never
    read whole."""
    after = 0
    while True:
        events = store.read_events(job_id, after_id=after, limit=page)
        for event in events:
            if event.type == "job.running":
                return event.data.get("seed")
            if event.type == "training.status":
                return None
        if len(events) < page:
            return None
        after = events[-1].id
