"""The executor seam: candidates by target, first yes wins, reasons combined, fields recorded at admission."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from simpletuner_core.jobs import executors as ex
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs import queue
from simpletuner_core.jobs.executors.local import LocalExecutor
from simpletuner_core.jobs.store import SCHEMA_VERSION, SQLiteStore


class Pool(ex.BaseExecutor):
    """A remote executor with a fixed set of labelled slots; ``launch`` only records (no process)."""

    def __init__(self, name: str, slots: dict[str, dict[str, str]]) -> None:
        self.name, self.slots, self.launched = name, slots, []

    def place(self, job: m.Job, active: Sequence[m.Job], limits: queue.Limits) -> queue.Decision:
        busy = {a.worker_id for a in ex.mine(self.name, active)}
        fits = [w for w, labels in self.slots.items() if ex.labels_match(job.worker_labels, labels)]
        free = [w for w in fits if w not in busy]
        if free:
            return queue.Decision(fields={"worker_id": free[0]})
        return queue.Decision(reason="no idle worker matches" if fits else "no worker matches the labels")

    def launch(self, job: m.Job) -> m.Job:
        self.launched.append(job.id)
        return job

    def alive(self, job: m.Job) -> bool:
        return True


def job(job_id: str, **kw: object) -> m.Job:
    return m.Job(id=job_id, config={}, created_at=time.time(), **kw)  # type: ignore[arg-type]


def executors(tmp_path: Path, store: SQLiteStore) -> dict[str, ex.Executor]:
    return {"local": LocalExecutor(store, tmp_path, []),
            "pool": Pool("pool", {"w1": {"gpu_type": "cpu-x86", "team": "nlp"}, "w2": {"gpu_type": "a100-80g"}})}


def test_targets_pick_candidates_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    exs = executors(tmp_path, store)
    names = {t: [e.name for e in ex.candidates(job("a", target=t), exs)] for t in ("auto", "local", "worker", "pool")}
    assert names == {"auto": ["pool", "local"], "local": ["local"], "worker": ["pool"], "pool": ["pool"]}


def test_auto_prefers_a_matching_worker_and_falls_back_to_local(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    exs = executors(tmp_path, store)
    on_worker = ex.place(job("a", worker_labels={"gpu_type": "cpu*"}), [], exs, queue.Limits())
    assert on_worker.ok and on_worker.executor == "pool" and on_worker.fields == {"worker_id": "w1"}
    local = ex.place(job("b", worker_labels={"gpu_type": "h100*"}), [], exs, queue.Limits())
    assert local.ok and local.executor == "local" and local.cpu_slot


def test_worker_target_waits_with_every_reason_and_is_never_impossible(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    exs = executors(tmp_path, store)
    waiting = ex.place(job("a", target="worker", worker_labels={"team": "vision"}), [], exs, queue.Limits())
    assert not waiting.ok and not waiting.impossible and waiting.reason == "no worker matches the labels"
    busy = [job("x", state=m.RUNNING, executor="pool", worker_id="w1")]
    both = ex.place(job("b", worker_labels={"team": "nlp"}), [*busy, job("y", state=m.RUNNING, cpu_slot=True)],
                    exs, queue.Limits())
    assert both.reason == "pool: no idle worker matches; local: waiting for the CPU execution slot (held by job y)"
    alone = ex.place(job("c", target="worker"), [], {"local": exs["local"]}, queue.Limits())
    assert not alone.ok and "none is available" in alone.reason and not alone.impossible


def test_local_limits_count_only_local_jobs(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    exs = executors(tmp_path, store)
    remote = [job("x", state=m.RUNNING, executor="pool", worker_id="w2")]
    decision = ex.place(job("a", target="local"), remote, exs, queue.Limits(local_job_max_concurrent=1))
    assert decision.ok and decision.executor == "local"


def test_admit_records_the_executor_and_its_fields(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    exs = executors(tmp_path, store)
    store.create_job(job("a", target="worker", worker_labels={"gpu_type": "a100*"}))
    store.create_job(job("b", target="worker", worker_labels={"gpu_type": "a100*"}))
    started = queue.admit(store, exs)
    assert [(j.id, j.state, j.executor, j.worker_id) for j in started] == [("a", m.STARTING, "pool", "w2")]
    assert store.get_job("b").reason == "no idle worker matches"
    assert store.get_job("a").worker_labels == {"gpu_type": "a100*"} and store.get_job("a").target == "worker"


@pytest.mark.parametrize(("target", "labels", "message"), [
    ("gpu", None, "target: must be one of auto, local, pool, worker; got 'gpu'"),
    (3, None, "target: must be one of"),
    ("auto", ["a100"], "worker_labels: must be an object"),
    ("auto", {"gpu_type": 5}, "worker_labels: must be an object"),
    ("local", {"gpu_type": "a*"}, "worker_labels: apply to remote workers only"),
])
def test_bad_targets_and_labels_name_the_field(target: object, labels: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ex.check_target(target, labels, ["local", "pool"])


def test_label_globs() -> None:
    labels = {"gpu_type": "a100-80g", "team": "nlp"}
    assert ex.labels_match({"gpu_type": "a100*", "team": "nlp"}, labels)
    assert ex.labels_match({}, labels)
    assert not ex.labels_match({"gpu_type": "A100*"}, labels)  # case-sensitive
    assert not ex.labels_match({"region": "*"}, labels)  # a missing label never matches


def test_a_v2_store_gains_the_executor_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    from simpletuner_core.jobs.store import MIGRATIONS

    with conn:
        for migrate in MIGRATIONS[:2]:
            migrate(conn)
        conn.execute("PRAGMA user_version = 2")
        conn.execute("INSERT INTO jobs (id, config, state, created_at) VALUES ('old', '{}', 'completed', 1.0)")
    conn.close()
    store = SQLiteStore(path)
    old = store.get_job("old")
    assert (old.target, old.worker_labels, old.executor, old.attempts) == ("auto", {}, None, 0)
    assert store._conn().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3


def test_reconcile_leaves_jobs_of_an_executor_this_process_lacks(tmp_path: Path) -> None:
    from simpletuner_core.jobs.runner import Runner

    store = SQLiteStore(tmp_path / "s.db")
    store.create_job(job("far", state=m.RUNNING, executor="ghost", worker_id="n1"))
    store.create_job(job("near", state=m.RUNNING, executor="local", pid=2 ** 22 + 7, pid_start_time=1.0))
    runner = Runner(store, tmp_path, devices=[])
    assert "ghost" not in runner.executors and "local" in runner.executors
    assert [j.id for j in runner.reconcile()] == ["near"]
    assert store.get_job("far").state == m.RUNNING and store.get_job("near").state == m.FAILED
