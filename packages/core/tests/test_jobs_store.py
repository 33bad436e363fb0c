"""The SQLite job store on real files: schema versions, job CAS, gap-free event reads across processes,
cross-process wake-ups, commands, transactions and the EventStore adapter."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from simpletuner_core.events import EventEmitter
from simpletuner_core.events.types import Event
from simpletuner_core.jobs import store as store_module
from simpletuner_core.jobs.event_log import StoreEventLog, follow
from simpletuner_core.jobs.models import COMPLETED, QUEUED, RUNNING, STARTING, Job, JobError
from simpletuner_core.jobs.store import SCHEMA_VERSION, SchemaVersionError, SQLiteStore, open_store

# Appends argv[3] events {"n": 1..N} to job argv[2] after argv[4] s, argv[6] s apart; prints "ready" first,
# and the commit time when appending a single event.
WRITER = """
import sys, time
from pathlib import Path
from simpletuner_core.events.types import Event
from simpletuner_core.jobs.store import SQLiteStore
store = SQLiteStore(Path(sys.argv[1]))
job_id, count, delay, pace = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[6])
print("ready", flush=True)
time.sleep(delay)
for n in range(1, count + 1):
    store.append_event(Event("log", job_id, {"n": n, "writer": sys.argv[5]}))
    if count == 1:
        print(time.time(), flush=True)
    time.sleep(pace)
"""


def writer(db: Path, job_id: str, count: int, delay: float = 0.0, name: str = "w",
           pace: float = 0.0) -> subprocess.Popen[str]:
    args = [str(db), job_id, str(count), str(delay), name, str(pace)]
    proc = subprocess.Popen([sys.executable, "-c", WRITER, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "state.db")


def test_schema_created_and_reopen_keeps_data(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.path == tmp_path / "state.db"
    store.create_job(Job("a", {"lr": 1e-4}, device_ids=(0, 1), any_gpu=True))
    store.set_setting("max_gpus", 4)
    store.close()
    raw = sqlite3.connect(tmp_path / "state.db")
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "events", "commands", "settings"} <= tables
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    again = SQLiteStore(tmp_path / "state.db")
    job = again.get_job("a")
    assert (job.config, job.device_ids, job.any_gpu, job.created_at > 0) == ({"lr": 1e-4}, (0, 1), True, True)
    assert again.get_setting("max_gpus") == 4


def test_default_path_is_under_simpletuner_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPLETUNER_HOME", str(tmp_path / "home"))
    assert SQLiteStore().path == tmp_path / "home" / "state.db"


def test_newer_schema_refuses_to_open(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "state.db").close()
    raw = sqlite3.connect(tmp_path / "state.db")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this SimpleTuner supports \({SCHEMA_VERSION}\)"):
        SQLiteStore(tmp_path / "state.db")


def test_jobs_create_get_list_update(store: SQLiteStore) -> None:
    store.create_job(Job("b", {}, user="ann", created_at=2.0))
    store.create_job(Job("a", {}, user="bob", created_at=1.0, state=RUNNING))
    store.create_job(Job("c", {}, user="ann", created_at=2.0))
    with pytest.raises(JobError, match="already exists"):
        store.create_job(Job("a", {}))
    assert [j.id for j in store.list_jobs()] == ["a", "b", "c"]
    assert [j.id for j in store.list_jobs(states=[QUEUED])] == ["b", "c"]
    assert [j.id for j in store.list_jobs(user="ann", limit=1)] == ["b"]
    assert store.list_jobs(states=[]) == []
    updated = store.update_job("b", allocated_gpus=(1,), pid=42, reason=None)
    assert store.get_job("b") == updated and updated.allocated_gpus == (1,) and updated.pid == 42
    with pytest.raises(JobError, match="unknown job 'nope'"):
        store.get_job("nope")
    with pytest.raises(JobError, match="unknown job 'nope'"):
        store.update_job("nope", pid=1)
    with pytest.raises(TypeError, match="colour"):
        store.update_job("b", colour="red")
    with pytest.raises(TypeError, match="id"):
        store.update_job("b", id="z")
    with pytest.raises(ValueError, match="unknown job state"):
        store.update_job("b", state="paused")


def test_transition_is_compare_and_set(store: SQLiteStore) -> None:
    store.create_job(Job("a", {}))
    assert store.transition("a", [RUNNING], COMPLETED) is None
    moved = store.transition("a", [QUEUED], STARTING, allocated_gpus=(0,))
    assert moved is not None and moved.state == STARTING and store.get_job("a").allocated_gpus == (0,)
    with pytest.raises(JobError):
        store.transition("nope", [QUEUED], STARTING)


def test_racing_transitions_exactly_one_wins(store: SQLiteStore) -> None:
    for round_ in range(10):
        job_id = f"race{round_}"
        store.create_job(Job(job_id, {}))
        barrier = threading.Barrier(2)
        results: list[Job | None] = []

        def race(job_id: str = job_id, barrier: threading.Barrier = barrier,
                 results: list[Job | None] = results) -> None:
            barrier.wait()
            results.append(store.transition(job_id, [QUEUED], STARTING))
            store.close()

        threads = [threading.Thread(target=race) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(result is not None for result in results) == 1


def test_queue_position(store: SQLiteStore) -> None:
    store.create_job(Job("low", {}, created_at=1.0))
    store.create_job(Job("high", {}, priority=5, created_at=3.0))
    store.create_job(Job("low2", {}, created_at=2.0))
    store.create_job(Job("run", {}, state=RUNNING, created_at=0.5))
    assert [store.queue_position(j) for j in ("high", "low", "low2", "run")] == [1, 2, 3, None]


def test_event_ids_increase_and_read_after(store: SQLiteStore) -> None:
    store.create_job(Job("a", {}))
    store.create_job(Job("b", {}))
    ids = [store.append_event(Event("log", job, {"n": n})).id for n, job in enumerate("abab")]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [e.data["n"] for e in store.read_events("a")] == [0, 2]
    assert [e.data["n"] for e in store.read_events("a", after_id=ids[0])] == [2]
    assert store.read_events("b", limit=1)[0].id == ids[1]
    assert store.last_event_id("b") == ids[3] and store.last_event_id("nope") == 0
    with pytest.raises(JobError):
        store.append_event(Event("log", "nope"))


@pytest.mark.parametrize("batch_chars", [store_module.DECODE_BATCH_CHARS, 12])
def test_read_events_of_types_filters_by_type_job_and_position(store: SQLiteStore, batch_chars: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "DECODE_BATCH_CHARS", batch_chars)  # 12: payloads decoded a few at a time
    store.create_job(Job("a", {}))
    store.create_job(Job("b", {}))
    kinds = ["training.status", "log", "training.metric", "training.status", "log", "training.status"]
    ids = [store.append_event(Event(kind, "a", {"n": n})).id for n, kind in enumerate(kinds)]
    store.append_event(Event("training.status", "b", {"n": 99}))

    wanted = ("training.status", "training.metric")
    assert [e.data["n"] for e in store.read_events_of_types("a", wanted)] == [0, 2, 3, 5]
    assert [e.data["n"] for e in store.read_events_of_types("a", ["training.status"], after_id=ids[0])] == [3, 5]
    assert [e.data["n"] for e in store.read_events_of_types("a", wanted, limit=2)] == [0, 2]
    assert [e.data["n"] for e in store.read_events_of_types("a", ["log"], limit=1, newest_first=True)] == [4]
    assert [e.type for e in store.read_events_of_types("a", ["log"])] == ["log", "log"]
    assert store.read_events_of_types("a", []) == [] and store.read_events_of_types("nope", wanted) == []
    nested = store.append_event(Event("training.metric", "a", {"metrics": {"eval_loss": 0.5}, "tags": ["x, y"]}))
    assert store.read_events_of_types("a", wanted, after_id=ids[-1]) == [nested]


def test_read_event_fields_extracts_payload_fields_in_order_and_range(store: SQLiteStore) -> None:
    store.create_job(Job("a", {}))
    store.create_job(Job("b", {}))
    ids = [store.append_event(Event("training.status", "a", {"step": n, "loss": n / 10, "lr": 1e-4})).id
           for n in range(1, 5)]
    store.append_event(Event("log", "a", {"step": 99}))
    store.append_event(Event("training.status", "b", {"step": 7}))
    fields = ("step", "loss", "lr", "missing")
    assert store.read_event_fields("a", "training.status", fields) == [
        (ids[0], 1, 0.1, 1e-4, None), (ids[1], 2, 0.2, 1e-4, None), (ids[2], 3, 0.3, 1e-4, None),
        (ids[3], 4, 0.4, 1e-4, None)]
    assert [row[1] for row in store.read_event_fields("a", "training.status", ("step",), after_id=ids[0],
                                                      upto_id=ids[2])] == [2, 3]
    # a diverged run's NaN loss: not JSON to older SQLite, so those rows are decoded in Python instead
    nan = store.append_event(Event("training.status", "a", {"step": 5, "loss": float("nan"), "lr": 1e-4})).id
    rows = store.read_event_fields("a", "training.status", ("step", "loss"), after_id=ids[3])
    assert rows[0][0] == nan and rows[0][1] == 5 and rows[0][2] != rows[0][2]  # NaN kept as NaN
    with pytest.raises(ValueError, match="identifiers"):
        store.read_event_fields("a", "training.status", ("step') FROM events --",))


def test_reconnecting_reader_gets_every_event_once_from_another_process(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    store.create_job(Job("a", {}))
    proc = writer(store.path, "a", 300, pace=0.001)
    seen: list[int] = []
    reads_while_writing = 0
    after_id, deadline = 0, time.monotonic() + 10
    while len(seen) < 300 and time.monotonic() < deadline:
        batch = store.wait_events("a", after_id, timeout=1.0, limit=7)
        reads_while_writing += proc.poll() is None
        seen += [e.data["n"] for e in batch]
        after_id = batch[-1].id if batch else after_id
        store.close()  # reconnect from the last id seen, as a dropped stream client would
        store = SQLiteStore(tmp_path / "state.db")
    assert proc.wait(10) == 0, proc.communicate()[1]
    assert seen == list(range(1, 301))
    assert reads_while_writing > 5  # the reads really interleaved with the writes
    assert store.read_events("a", after_id) == []


def test_wait_events_wakes_quickly_on_another_process_append(store: SQLiteStore) -> None:
    store.create_job(Job("a", {}))
    proc = writer(store.path, "a", 1, delay=0.3)
    events = store.wait_events("a", 0, timeout=5.0)
    woke = time.time()
    assert proc.stdout is not None
    committed = float(proc.stdout.readline())
    assert proc.wait(10) == 0
    assert [e.data["n"] for e in events] == [1]
    assert woke - committed < 1.5  # 25 ms polling; far below the 5 s timeout even on a loaded machine


def test_wait_events_same_process_and_timeout(store: SQLiteStore) -> None:
    store.create_job(Job("a", {}))
    start = time.monotonic()
    assert store.wait_events("a", 0, timeout=0.2) == []
    assert 0.2 <= time.monotonic() - start < 3.0
    timer = threading.Timer(0.1, lambda: (store.append_event(Event("log", "a")), store.close()))
    timer.start()
    start = time.monotonic()
    assert len(store.wait_events("a", 0, timeout=5.0)) == 1
    assert time.monotonic() - start < 3.0  # woken by the append, not by the 5 s timeout
    timer.join()
    with store.transaction(), pytest.raises(RuntimeError, match="inside a transaction"):
        store.wait_events("a", 0, timeout=0.1)


def test_commands_taken_once_in_order(store: SQLiteStore) -> None:
    store.create_job(Job("a", {}))
    ids = [store.post_command("a", c) for c in ("validate", "checkpoint", "stop")]
    assert ids == sorted(ids)
    assert store.take_commands("a") == ["validate", "checkpoint", "stop"]
    assert store.take_commands("a") == []
    store.post_command("a", "cancel")
    assert store.take_commands("a") == ["cancel"]
    with pytest.raises(ValueError, match="stop, cancel, validate, checkpoint"):
        store.post_command("a", "pause")
    with pytest.raises(JobError, match="unknown job"):
        store.post_command("nope", "stop")


def test_settings_are_json(store: SQLiteStore) -> None:
    assert store.get_setting("x", default="d") == "d"
    store.set_setting("x", {"a": [1, 2]})
    assert store.get_setting("x") == {"a": [1, 2]}
    store.set_setting("x", None)
    assert store.get_setting("x", default="d") is None


def test_transaction_rollback_and_nesting(store: SQLiteStore) -> None:
    store.create_job(Job("a", {}))
    with pytest.raises(RuntimeError), store.transaction():
        store.update_job("a", state=RUNNING)
        store.create_job(Job("b", {}))
        store.post_command("a", "stop")
        raise RuntimeError("boom")
    assert store.get_job("a").state == QUEUED and [j.id for j in store.list_jobs()] == ["a"]
    assert store.take_commands("a") == []

    other = SQLiteStore(store.path)  # a second connection sees only committed data
    with store.transaction():
        with store.transaction():
            store.create_job(Job("c", {}))
        with pytest.raises(JobError):
            other.get_job("c")  # the inner block did not commit
        with pytest.raises(ValueError), store.transaction():
            store.create_job(Job("d", {}))
            raise ValueError("inner only")
    assert other.get_job("c").id == "c"
    with pytest.raises(JobError):
        other.get_job("d")  # the failed inner block rolled back alone


def test_two_processes_write_concurrently_without_lock_errors(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    store.create_job(Job("a", {}))
    procs = [writer(store.path, "a", 200, name=name) for name in ("x", "y")]
    for proc in procs:
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "locked" not in err, err
    events = store.read_events("a")
    assert len(events) == 400 and len({e.id for e in events}) == 400
    for name in ("x", "y"):
        assert [e.data["n"] for e in events if e.data["writer"] == name] == list(range(1, 201))


def test_store_event_log_backs_an_emitter_and_follow_ends_when_final(store: SQLiteStore) -> None:
    store.create_job(Job("a", {}, state=RUNNING))
    emitter = EventEmitter("a", StoreEventLog(store, "a"))
    first = emitter.emit("job.stage", stage="load", message="loading")
    second = emitter.log("hello")
    assert first.id > 0 and second.id > first.id and store.last_event_id("a") == second.id
    emitter.close()  # closes this thread's connection only; the store reopens lazily
    assert [e.type for e in store.read_events("a")] == ["job.stage", "log"]

    def finish() -> None:
        time.sleep(0.1)
        store.append_event(Event("job.completed", "a", {"step": 1, "output_dir": "out"}))
        store.update_job("a", state=COMPLETED)
        store.close()

    thread = threading.Thread(target=finish)
    thread.start()
    followed = list(follow(store, "a", after_id=first.id, poll_timeout=0.05))
    thread.join()
    assert [e.type for e in followed] == ["log", "job.completed"]
    assert list(follow(store, "a", stop=lambda: True)) == []
