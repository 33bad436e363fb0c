"""``run_seed``: the seed a job trained with, read from its log without reading the whole log."""

from __future__ import annotations

from pathlib import Path

from simpletuner_core.events.types import Event
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.event_log import run_seed
from simpletuner_core.jobs.store import open_store


def log_of(tmp_path: Path, kinds: list[tuple[str, dict[str, object]]]) -> tuple[object, str]:
    store = open_store(tmp_path)
    job = store.create_job(m.Job(id="j", config={}))
    for kind, data in kinds:
        store.append_event(Event(type=kind, job_id=job.id, data=data))
    return store, job.id


def test_the_seed_is_found_past_the_first_page(tmp_path: Path) -> None:
    store, job_id = log_of(tmp_path, [("log", {"message": "x"})] * 450 + [("job.running", {"seed": 5})])
    assert run_seed(store, job_id, page=200) == 5


def test_no_seed_before_the_first_step_or_in_an_empty_log(tmp_path: Path) -> None:
    store, job_id = log_of(tmp_path, [("training.status", {"step": 1}), ("job.running", {"seed": 5})])
    assert run_seed(store, job_id) is None
    other = open_store(tmp_path / "other")
    other.create_job(m.Job(id="k", config={}))
    assert run_seed(other, "k") is None
