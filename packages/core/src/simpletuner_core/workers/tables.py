"""The workers' tables in the shared store (schema v4): workers, their message streams, runs and files.

Every write runs inside ``store.transaction()`` so it joins the caller's transaction (admission, requeue) and
takes the write lock up front, like the rest of the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from simpletuner_core.auth import hash_token
from simpletuner_core.events.types import Event
from simpletuner_core.jobs import models as m
from simpletuner_core.workers import OFFLINE, Worker, new_token, new_worker_id

_COLUMNS = ("id, name, worker_type, labels, status, created_at, gpu_count, gpu_name, gpu_vram_gb, accelerator, "
            "cpu_count, hostname, agent_version, registered_at, last_heartbeat")
_SETTABLE = frozenset({"status", "gpu_count", "gpu_name", "gpu_vram_gb", "accelerator", "cpu_count", "hostname",
                       "agent_version", "registered_at", "last_heartbeat", "labels"})


class DuplicateWorkerError(ValueError):
    """The name is taken (case-insensitively)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _row(row: Any) -> Worker:
    values = {key: row[key] for key in row.keys()}
    values["labels"] = json.loads(values["labels"])
    return Worker(**values)


def create(store: Any, name: str, worker_type: str, labels: Mapping[str, str]) -> tuple[Worker, str]:
    """A new worker (``offline`` until its agent registers) and its token, which is never stored in clear."""
    token, worker_id = new_token(), new_worker_id()
    with store.transaction():
        conn = store.connection()
        if conn.execute("SELECT 1 FROM workers WHERE name = ?", (name,)).fetchone():
            raise DuplicateWorkerError(f"a worker named {name!r} exists")
        conn.execute("INSERT INTO workers (id, name, worker_type, labels, token_hash, status, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (worker_id, name, worker_type, _dumps(dict(labels)), hash_token(token), OFFLINE, time.time()))
    worker = get(store, worker_id)
    assert worker is not None
    return worker, token


def get(store: Any, worker_id: str | None) -> Worker | None:
    if worker_id is None:
        return None
    row = store.connection().execute(f"SELECT {_COLUMNS} FROM workers WHERE id = ?", (worker_id,)).fetchone()
    return None if row is None else _row(row)


def by_token(store: Any, token: str) -> Worker | None:
    """The worker holding ``token``; tokens are 256-bit random, so looking up their sha256 leaks nothing."""
    row = store.connection().execute(f"SELECT {_COLUMNS} FROM workers WHERE token_hash = ?",
                                     (hash_token(token),)).fetchone()
    return None if row is None else _row(row)


def token_hash(store: Any, worker_id: str) -> str | None:
    row = store.connection().execute("SELECT token_hash FROM workers WHERE id = ?", (worker_id,)).fetchone()
    return None if row is None else str(row["token_hash"])


def listing(store: Any) -> list[Worker]:
    return [_row(r) for r in store.connection().execute(f"SELECT {_COLUMNS} FROM workers ORDER BY name")]


def update(store: Any, worker_id: str, **fields: Any) -> Worker | None:
    bad = sorted(set(fields) - _SETTABLE)
    if bad:
        raise TypeError(f"cannot set worker field(s) {', '.join(bad)}")
    if "labels" in fields:
        fields["labels"] = _dumps(fields["labels"])
    with store.transaction():
        assignments = ", ".join(f"{name} = ?" for name in fields)
        store.connection().execute(f"UPDATE workers SET {assignments} WHERE id = ?", [*fields.values(), worker_id])
        return get(store, worker_id)


def rotate(store: Any, worker_id: str) -> str | None:
    token = new_token()
    with store.transaction():
        cursor = store.connection().execute("UPDATE workers SET token_hash = ? WHERE id = ?",
                                            (hash_token(token), worker_id))
    return token if cursor.rowcount else None


def delete(store: Any, worker_id: str) -> bool:
    with store.transaction():
        return store.connection().execute("DELETE FROM workers WHERE id = ?", (worker_id,)).rowcount > 0


def mark_stale_offline(store: Any, offline_after: float, now: float | None = None) -> list[str]:
    """Workers silent for ``offline_after`` seconds become offline; returns their ids (a read first, so the
    common case takes no write lock)."""
    cutoff = (time.time() if now is None else now) - offline_after
    sql = "SELECT id FROM workers WHERE status != ? AND COALESCE(last_heartbeat, registered_at, 0) < ?"
    if not store.connection().execute(sql, (OFFLINE, cutoff)).fetchone():
        return []
    with store.transaction():
        ids = [r["id"] for r in store.connection().execute(sql, (OFFLINE, cutoff))]
        store.connection().executemany("UPDATE workers SET status = ? WHERE id = ?", [(OFFLINE, i) for i in ids])
    return ids


def current_jobs(store: Any) -> dict[str, str]:
    """worker id -> the active job it holds."""
    active = store.list_jobs(states=m.ACTIVE_STATES)
    return {job.worker_id: job.id for job in active if job.worker_id and job.executor == "worker"}


# -- the message stream (dispatch, commands, drain): replayed after the agent's Last-Event-ID ----------------


def post(store: Any, worker_id: str, kind: str, **data: Any) -> int:
    with store.transaction():
        cursor = store.connection().execute(
            "INSERT INTO worker_messages (worker_id, type, data, created_at) VALUES (?, ?, ?, ?)",
            (worker_id, kind, _dumps(data), time.time()))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def messages(store: Any, worker_id: str, after: int, limit: int = 100) -> list[tuple[int, str, dict[str, Any]]]:
    rows = store.connection().execute(
        "SELECT id, type, data FROM worker_messages WHERE worker_id = ? AND id > ? ORDER BY id LIMIT ?",
        (worker_id, after, limit))
    return [(r["id"], r["type"], json.loads(r["data"])) for r in rows]


def has_commands(store: Any, job_id: str) -> bool:
    """Untaken commands for the job (a read, so the stream's poll takes no write lock when there are none)."""
    return store.connection().execute("SELECT 1 FROM commands WHERE job_id = ? AND taken_at IS NULL LIMIT 1",
                                      (job_id,)).fetchone() is not None


def last_message(store: Any, worker_id: str) -> int:
    row = store.connection().execute("SELECT MAX(id) FROM worker_messages WHERE worker_id = ?",
                                     (worker_id,)).fetchone()
    return int(row[0] or 0)


# -- runs: one per (job, attempt); the event watermark lives here ---------------------------------------------


@attrs.frozen
class Run:
    job_id: str
    attempt: int
    worker_id: str
    dispatched_at: float
    last_seq: int
    last_checkpoint: str | None
    outputs: list[dict[str, Any]]


def start_run(store: Any, job_id: str, attempt: int, worker_id: str,
              files: Iterable[tuple[str, str, int]]) -> None:
    """Record a dispatch and the (sha256, path, size) of the dataset files it lets the worker fetch."""
    with store.transaction():
        conn = store.connection()
        conn.execute("INSERT OR REPLACE INTO worker_runs (job_id, attempt, worker_id, dispatched_at) "
                     "VALUES (?, ?, ?, ?)", (job_id, attempt, worker_id, time.time()))
        conn.executemany("INSERT OR REPLACE INTO worker_files (job_id, sha256, path, size) VALUES (?, ?, ?, ?)",
                         [(job_id, sha, path, size) for sha, path, size in files])


def run(store: Any, job_id: str, attempt: int) -> Run | None:
    row = store.connection().execute("SELECT * FROM worker_runs WHERE job_id = ? AND attempt = ?",
                                     (job_id, attempt)).fetchone()
    if row is None:
        return None
    return Run(row["job_id"], row["attempt"], row["worker_id"], row["dispatched_at"], row["last_seq"],
               row["last_checkpoint"], json.loads(row["outputs"]))


def runs(store: Any, job_id: str) -> list[Run]:
    rows = store.connection().execute("SELECT attempt FROM worker_runs WHERE job_id = ? ORDER BY attempt",
                                      (job_id,)).fetchall()
    return [r for r in (run(store, job_id, row["attempt"]) for row in rows) if r is not None]


def last_checkpoint(store: Any, job_id: str) -> str | None:
    """The newest checkpoint any attempt of the job reported (a path on the worker that saved it)."""
    found = [r.last_checkpoint for r in runs(store, job_id) if r.last_checkpoint]
    return found[-1] if found else None


def set_outputs(store: Any, job_id: str, attempt: int, outputs: Sequence[Mapping[str, Any]]) -> None:
    with store.transaction():
        store.connection().execute("UPDATE worker_runs SET outputs = ? WHERE job_id = ? AND attempt = ?",
                                   (_dumps([dict(o) for o in outputs]), job_id, attempt))


def ingest(store: Any, job_id: str, attempt: int, events: Sequence[Mapping[str, Any]]) -> int:
    """Store the worker's events whose ``seq`` is above the run's watermark, in order, and raise the watermark
    in the same transaction: a batch sent twice (the answer was lost) is stored once. Returns the watermark."""
    with store.transaction():
        current = run(store, job_id, attempt)
        if current is None:
            raise m.JobError(f"job {job_id} has no attempt {attempt} on a worker")
        mark, checkpoint = current.last_seq, current.last_checkpoint
        for raw in sorted(events, key=lambda e: int(e["seq"])):
            seq = int(raw["seq"])
            if seq <= mark:
                continue
            data = dict(raw.get("data") or {})
            store.append_event(Event(type=str(raw["type"]), job_id=job_id, data=data,
                                     timestamp=float(raw.get("timestamp") or time.time()),
                                     level=str(raw.get("level") or "info"), version=int(raw.get("version") or 1)))
            if raw["type"] == "checkpoint.saved" and data.get("path"):
                checkpoint = str(data["path"])
            mark = seq
        store.connection().execute(
            "UPDATE worker_runs SET last_seq = ?, last_checkpoint = ? WHERE job_id = ? AND attempt = ?",
            (mark, checkpoint, job_id, attempt))
    return mark


def file_for(store: Any, worker_id: str, sha256: str) -> tuple[str, int] | None:
    """(path, size) of a blob some job dispatched to ``worker_id`` references; None for any other blob."""
    row = store.connection().execute(
        "SELECT f.path, f.size FROM worker_files f JOIN worker_runs r ON r.job_id = f.job_id "
        "WHERE f.sha256 = ? AND r.worker_id = ? LIMIT 1", (sha256, worker_id)).fetchone()
    return None if row is None else (str(row["path"]), int(row["size"]))

