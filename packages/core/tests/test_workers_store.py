"""The worker executor and its tables on a real store: placement, dispatch, watermark, offline, requeue."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from simpletuner_core.jobs import executors as ex
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs import queue
from simpletuner_core.jobs.executors.worker import WorkerExecutor
from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import SQLiteStore
from simpletuner_core.workers import IDLE, OFFLINE, tables


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "state.db")


def _worker(store: SQLiteStore, name: str, labels: dict[str, str], gpus: int = 0, status: str = IDLE) -> str:
    worker, token = tables.create(store, name, "persistent", labels)
    assert token.startswith("wt_") and tables.by_token(store, token) == worker
    tables.update(store, worker.id, status=status, gpu_count=gpus, last_heartbeat=time.time())
    return worker.id


def _job(job_id: str, **kw: object) -> m.Job:
    return m.Job(id=job_id, config={"--num_processes": kw.pop("processes", 1)}, created_at=time.time(), **kw)


def test_placement_by_status_labels_globs_processes_and_held(store: SQLiteStore, tmp_path: Path) -> None:
    executor = WorkerExecutor(store, tmp_path)
    assert not executor.place(_job("x", target="worker"), [], queue.Limits()).ok  # none registered: waits
    assert executor.place(_job("x", target="auto"), [], queue.Limits()).impossible  # auto: go local quietly
    a = _worker(store, "a", {"gpu_type": "a100-80g", "team": "nlp"}, gpus=2)
    b = _worker(store, "b", {"gpu_type": "cpu", "team": "nlp"})
    _worker(store, "c", {"gpu_type": "a100-40g"}, gpus=8, status=OFFLINE)
    place = lambda job, active=(): executor.place(job, list(active), queue.Limits())  # noqa: E731
    assert place(_job("1", worker_labels={"gpu_type": "a100*"})).fields == {"worker_id": a}
    assert place(_job("2", worker_labels={"gpu_type": "cpu"})).fields == {"worker_id": b}
    assert place(_job("3", worker_labels={"team": "nlp"}, processes=2)).fields == {"worker_id": a}
    assert not place(_job("4", processes=4)).ok  # c has 8 GPUs but is offline
    held = _job("h", state=m.RUNNING, executor="worker", worker_id=a)
    assert place(_job("5", worker_labels={"gpu_type": "a100*"}), [held]).reason.startswith("waiting for an idle")
    assert not place(_job("6", worker_labels={"region": "*"})).ok  # a missing label never matches


def test_dispatch_watermark_offline_and_requeue_then_fail(store: SQLiteStore, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(b"x" * 10)
    (data / "a.txt").write_text("a caption")
    loader = tmp_path / "loader.json"
    loader.write_text(f'[{{"id": "d", "type": "local", "instance_data_dir": "{data}"}}]')
    runner = Runner(store, tmp_path, devices=[])
    worker_id = _worker(store, "w", {"gpu_type": "cpu"})
    job = m.Job(id="j", config={"--data_backend_config": str(loader)}, created_at=time.time(), target="worker")
    store.create_job(job)
    started = queue.admit(store, runner.executors)
    assert [(j.id, j.executor, j.worker_id) for j in started] == [("j", "worker", worker_id)]
    runner.start(started[0])
    [(_, kind, sent)] = tables.messages(store, worker_id, 0)
    assert kind == "job_submit" and sent["job_id"] == "j" and sent["attempt"] == 0
    files = sent["datasets"]["0.instance_data_dir"]["files"]
    assert [f["path"] for f in files] == ["a.png", "a.txt"] and files[0]["size"] == 10
    assert tables.file_for(store, worker_id, files[0]["sha256"]) == (str(data / "a.png"), 10)
    assert tables.file_for(store, "someone-else", files[0]["sha256"]) is None

    sent_events = [{"seq": 3, "type": "log", "data": {"message": "a"}},
                   {"seq": 7, "type": "checkpoint.saved", "data": {"step": 5, "path": "/w/checkpoint-5"}}]
    assert tables.ingest(store, "j", 0, sent_events) == 7
    assert tables.ingest(store, "j", 0, [*sent_events, {"seq": 8, "type": "log", "data": {}}]) == 8
    assert [e.type for e in store.read_events("j")] == ["log", "checkpoint.saved", "log"]

    store.set_setting("worker_max_attempts", 1)
    tables.update(store, worker_id, last_heartbeat=time.time() - 500)  # silent longer than 120 s
    runner.kick()  # tick marks it offline, reconcile requeues (attempt 1 of 1)
    assert tables.get(store, worker_id).status == OFFLINE
    requeued = store.get_job("j")
    assert (requeued.state, requeued.attempts, requeued.worker_id, requeued.executor) == ("queued", 1, None, None)
    event = store.read_events("j")[-1]
    assert event.type == "job.requeued" and event.data["resume_checkpoint"] == "/w/checkpoint-5"
    assert tables.messages(store, worker_id, 1)[0][1] == "job_abandon"

    tables.update(store, worker_id, status=IDLE, last_heartbeat=time.time())  # back; takes attempt 1
    [again] = runner.kick()
    assert again.worker_id == worker_id and again.attempts == 1
    assert tables.messages(store, worker_id, 0)[-1][2]["resume_checkpoint"] == "/w/checkpoint-5"
    tables.update(store, worker_id, status=OFFLINE)
    runner.reconcile()  # past worker_max_attempts: failed
    assert store.get_job("j").state == m.FAILED and store.get_job("j").resumable


def test_check_target_names_the_field(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match=r"^worker_labels: "):
        ex.check_target("worker", {"gpu": 3}, ["local", "worker"])


def test_jobs_submit_cli_takes_target_and_worker_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from simpletuner_core.cli.main import main

    assert main(["jobs", "--home", str(tmp_path), "submit", "any", "--target", "moon"]) == 2
    assert "target: must be one of auto, local, worker" in capsys.readouterr().err
    assert main(["jobs", "--home", str(tmp_path), "submit", "any", "--worker-label", "gpu_type"]) == 2
    assert "worker_labels: --worker-label takes KEY=GLOB" in capsys.readouterr().err
