"""Admission decisions (pure) and their atomic application to a real SQLite store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs import queue
from simpletuner_core.jobs.devices import Device, discover
from simpletuner_core.jobs.executors.local import LocalExecutor
from simpletuner_core.jobs.store import SQLiteStore

GPUS = [Device(i, "A100", 40.0) for i in range(4)]


def job(job_id: str, **kw: object) -> m.Job:
    return m.Job(id=job_id, config={}, created_at=kw.pop("created_at", time.time()), **kw)  # type: ignore[arg-type]


def test_cpu_jobs_share_one_execution_slot() -> None:
    first = queue.decide(job("a"), [], [], queue.Limits())
    assert first.ok and first.cpu_slot and first.gpus == ()
    holder = job("a", state=m.RUNNING, cpu_slot=True)
    second = queue.decide(job("b"), [holder], [], queue.Limits())
    assert not second.ok and "CPU execution slot (held by job a)" in second.reason and not second.impossible


def test_gpu_requests_device_ids_and_any_gpu() -> None:
    busy = job("x", state=m.RUNNING, allocated_gpus=(0, 1))
    assert queue.decide(job("a", gpus_requested=2), [busy], GPUS, queue.Limits()).gpus == (2, 3)
    pinned = queue.decide(job("b", device_ids=(1, 2)), [busy], GPUS, queue.Limits())
    assert not pinned.ok and pinned.reason == "waiting for GPU(s) [1] (in use)"
    assert queue.decide(job("c", device_ids=(1, 2), any_gpu=True, gpus_requested=2), [busy], GPUS,
                        queue.Limits()).gpus == (2, 3)
    too_many = queue.decide(job("d", gpus_requested=8), [], GPUS, queue.Limits())
    assert too_many.impossible and "this machine offers 4" in too_many.reason
    unknown = queue.decide(job("e", device_ids=(7,)), [], GPUS, queue.Limits())
    assert unknown.impossible and "[7]" in unknown.reason


def test_limits() -> None:
    running = [job("x", state=m.RUNNING, allocated_gpus=(0,), user="ann")]
    assert "local_job_max_concurrent=1" in queue.decide(job("a", gpus_requested=1), running, GPUS,
                                                        queue.Limits(local_job_max_concurrent=1)).reason
    assert "local_gpu_max_concurrent=2" in queue.decide(job("a", gpus_requested=2), running, GPUS,
                                                        queue.Limits(local_gpu_max_concurrent=2)).reason
    assert "user 'ann'" in queue.decide(job("a", gpus_requested=1, user="ann"), running, GPUS,
                                        queue.Limits(local_user_max_concurrent=1)).reason
    assert queue.decide(job("a", gpus_requested=1, user="bob"), running, GPUS,
                        queue.Limits(local_user_max_concurrent=1)).ok


def test_set_limits_validates(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    assert queue.set_limits(store, local_job_max_concurrent=2, local_gpu_max_concurrent=None) == queue.Limits(
        local_gpu_max_concurrent=None, local_job_max_concurrent=2)
    for bad in ({"local_job_max_concurrent": 0}, {"local_gpu_max_concurrent": -1}, {"nope": 1},
                {"local_job_max_concurrent": "2"}, {"local_job_max_concurrent": True}):
        with pytest.raises(ValueError):
            queue.set_limits(store, **bad)
    assert queue.load_limits(store).local_job_max_concurrent == 2


def test_admit_follows_priority_then_age_and_records_reasons(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    now = time.time()
    for job_id, prio, age in (("old-low", 0, 3), ("new-high", 5, 1), ("mid", 0, 2)):
        store.create_job(job(job_id, priority=prio, created_at=now - age, gpus_requested=1))
    started = queue.admit(store, {"local": LocalExecutor(store, tmp_path, GPUS[:1])})
    assert [j.id for j in started] == ["new-high"]
    assert store.get_job("new-high").state == m.STARTING and store.get_job("new-high").allocated_gpus == (0,)
    assert store.get_job("old-low").reason == "waiting for 1 free GPU(s); 0 free"
    assert [store.queue_position(j) for j in ("old-low", "mid")] == [1, 2]


def test_concurrent_admission_never_double_allocates(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    for i in range(6):
        store.create_job(job(f"j{i}", gpus_requested=1, created_at=time.time() + i))
    results: list[list[m.Job]] = []

    def admit() -> None:
        other = SQLiteStore(tmp_path / "state.db")
        results.append(queue.admit(other, {"local": LocalExecutor(other, tmp_path, GPUS[:2])}))
        other.close()

    threads = [threading.Thread(target=admit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allocated = [g for batch in results for j in batch for g in j.allocated_gpus]
    assert sorted(allocated) == [0, 1]


def test_discover_without_a_driver_reports_why() -> None:
    devices, note = discover()
    if not devices:
        assert note and note.startswith("no GPU stats")
