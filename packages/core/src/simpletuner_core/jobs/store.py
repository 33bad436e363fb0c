"""The shared job store: jobs, their event logs, control commands and settings in one SQLite file.

The server and every trainer process open the same ``$SIMPLETUNER_HOME/state.db``; WAL mode lets readers run
while one writer commits, and every write takes the write lock up front (``BEGIN IMMEDIATE``) so concurrent
writers queue on ``busy_timeout`` instead of failing with ``database is locked``. Callers depend on the
:class:`Store` protocol only, so another backend (PostgreSQL) can be added without touching them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

from simpletuner_core import paths
from simpletuner_core.events.types import Event
from simpletuner_core.jobs.models import ALL_STATES, QUEUED, Job, JobError

COMMANDS = ("stop", "cancel", "validate", "checkpoint")
BUSY_TIMEOUT_MS = 10_000
POLL_INTERVAL = 0.025  # seconds between cross-process change checks in wait_events


class SchemaVersionError(RuntimeError):
    """The database was written by a newer SimpleTuner; opening it could corrupt data it does not understand."""


class Store(Protocol):
    """What the server, allocator and trainers need from persistent state; see :class:`SQLiteStore`."""

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Atomic block; store calls inside it (same thread) join it, nesting allowed, outermost commits."""
        ...

    def close(self) -> None:
        """Release this thread's connection; the store reopens lazily when used again."""
        ...

    def create_job(self, job: Job) -> Job: ...

    def get_job(self, job_id: str) -> Job: ...

    def list_jobs(self, states: Iterable[str] | None = None, user: str | None = None,
                  limit: int | None = None) -> list[Job]: ...

    def update_job(self, job_id: str, **fields: Any) -> Job: ...

    def transition(self, job_id: str, from_states: Iterable[str], to_state: str, **fields: Any) -> Job | None:
        """Compare-and-set on the state: the new Job, or None when the state was not in ``from_states``."""
        ...

    def queue_position(self, job_id: str) -> int | None: ...

    def append_event(self, event: Event) -> Event: ...

    def read_events(self, job_id: str, after_id: int = 0, limit: int | None = None) -> list[Event]: ...

    def last_event_id(self, job_id: str) -> int: ...

    def wait_events(self, job_id: str, after_id: int, timeout: float, limit: int | None = None) -> list[Event]:
        """Events after ``after_id`` as soon as any exist (any process), or [] after ``timeout`` seconds."""
        ...

    def post_command(self, job_id: str, command: str) -> int: ...

    def take_commands(self, job_id: str) -> list[str]: ...

    def get_setting(self, key: str, default: Any = None) -> Any: ...

    def set_setting(self, key: str, value: Any) -> None: ...


# --- schema -------------------------------------------------------------------------------------------------
# Each migration moves the schema up one version; they run in order inside one transaction at open.
# Never edit a released migration: append a new one (auth tables, for example, arrive that way).


def _migrate_v1(conn: sqlite3.Connection) -> None:
    for statement in (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY, config TEXT NOT NULL, state TEXT NOT NULL, env TEXT, "user" TEXT,
            priority INTEGER NOT NULL DEFAULT 0, gpus_requested INTEGER NOT NULL DEFAULT 0,
            device_ids TEXT NOT NULL DEFAULT '[]', any_gpu INTEGER NOT NULL DEFAULT 0,
            allocated_gpus TEXT NOT NULL DEFAULT '[]', cpu_slot INTEGER NOT NULL DEFAULT 0,
            pid INTEGER, pid_start_time REAL, reason TEXT, resumable INTEGER NOT NULL DEFAULT 0,
            output_dir TEXT, created_at REAL NOT NULL, started_at REAL, finished_at REAL)""",
        "CREATE INDEX jobs_by_state ON jobs (state, priority, created_at)",
        "CREATE INDEX jobs_by_created ON jobs (created_at, id)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            type TEXT NOT NULL, timestamp REAL NOT NULL, level TEXT NOT NULL, version INTEGER NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX events_by_job ON events (job_id, id)",
        """CREATE TABLE commands (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            command TEXT NOT NULL, created_at REAL NOT NULL, taken_at REAL)""",
        "CREATE INDEX commands_by_job ON commands (job_id, taken_at, id)",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ):
        conn.execute(statement)  # not executescript: it would commit the migration transaction early


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_v1]
SCHEMA_VERSION = len(MIGRATIONS)

# --- row mapping --------------------------------------------------------------------------------------------

_JOB_FIELDS = tuple(f.name for f in attrs.fields(Job))
_JSON_FIELDS = frozenset({"config", "device_ids", "allocated_gpus"})
_TUPLE_FIELDS = frozenset({"device_ids", "allocated_gpus"})
_BOOL_FIELDS = frozenset({"any_gpu", "cpu_slot", "resumable"})
_JOB_COLUMNS = ", ".join(f'"{name}"' for name in _JOB_FIELDS)
_EVENT_COLUMNS = "id, job_id, type, timestamp, level, version, data"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _job_values(job: Job) -> list[Any]:
    values = []
    for name in _JOB_FIELDS:
        value = getattr(job, name)
        if name in _JSON_FIELDS:
            value = _dumps(list(value) if name in _TUPLE_FIELDS else value)
        values.append(value)
    return values


def _row_to_job(row: sqlite3.Row) -> Job:
    values: dict[str, Any] = {}
    for name in _JOB_FIELDS:
        value = row[name]
        if name in _JSON_FIELDS:
            value = json.loads(value)
            if name in _TUPLE_FIELDS:
                value = tuple(value)
        elif name in _BOOL_FIELDS:
            value = bool(value)
        values[name] = value
    return Job(**values)


def _row_to_event(row: sqlite3.Row) -> Event:
    return Event(type=row["type"], job_id=row["job_id"], data=json.loads(row["data"]), id=row["id"],
                 timestamp=row["timestamp"], level=row["level"], version=row["version"])


def _check_state(state: str) -> None:
    if state not in ALL_STATES:
        raise ValueError(f"unknown job state {state!r}; expected one of: {', '.join(ALL_STATES)}")


class SQLiteStore:
    """:class:`Store` on one SQLite file, safe across threads (a connection each) and processes (WAL + locks)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else paths.home() / "state.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._pid = os.getpid()
        self._orphans: list[threading.local] = []  # connections inherited over fork: never closed in the child
        self._changed = threading.Condition()
        self._generation = 0  # bumped on every commit in this process, so same-process waiters wake at once
        self._migrate()

    # -- connections and transactions --

    def _conn(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # a forked child must not share the parent's SQLite handles
            self._orphans.append(self._local)
            self._local, self._pid = threading.local(), os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: no implicit BEGIN; transactions are explicit in transaction().
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")  # persistent; a no-op once the file is in WAL mode
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable against crashes, no fsync per commit
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn, self._local.depth = conn, 0
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn, self._local.depth = None, 0
            conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Write lock taken at BEGIN so a read-then-write (CAS, allocation) can never be invalidated.

        Nested blocks are savepoints: an exception rolls back only its own block; only the outermost commits.
        """
        conn = self._conn()
        depth: int = self._local.depth
        conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT sp{depth}")
        self._local.depth = depth + 1
        try:
            yield
        except BaseException:
            self._local.depth = depth
            if depth == 0:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO sp{depth}")
                conn.execute(f"RELEASE sp{depth}")
            raise
        self._local.depth = depth
        if depth > 0:
            conn.execute(f"RELEASE sp{depth}")
            return
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _migrate(self) -> None:
        conn = self._conn()
        with self.transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {version}, newer than this SimpleTuner supports "
                    f"({SCHEMA_VERSION}); upgrade simpletuner-core or point SIMPLETUNER_HOME elsewhere"
                )
            for migration in MIGRATIONS[version:]:
                migration(conn)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- jobs --

    def create_job(self, job: Job) -> Job:
        _check_state(job.state)
        if not job.created_at:
            job = attrs.evolve(job, created_at=time.time())
        placeholders = ", ".join("?" for _ in _JOB_FIELDS)
        with self.transaction():
            try:
                self._conn().execute(f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({placeholders})",
                                     _job_values(job))
            except sqlite3.IntegrityError as exc:
                raise JobError(f"job {job.id!r} already exists") from exc
        return job

    def get_job(self, job_id: str) -> Job:
        row = self._conn().execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobError(f"unknown job {job_id!r}")
        return _row_to_job(row)

    def list_jobs(self, states: Iterable[str] | None = None, user: str | None = None,
                  limit: int | None = None) -> list[Job]:
        where: list[str] = []
        params: list[Any] = []
        if states is not None:
            states = list(states)
            if not states:
                return []
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            params += states
        if user is not None:
            where.append('"user" = ?')
            params.append(user)
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id LIMIT ?"
        params.append(-1 if limit is None else limit)
        return [_row_to_job(row) for row in self._conn().execute(sql, params)]

    def _write_job(self, job: Job) -> None:
        assignments = ", ".join(f'"{name}" = ?' for name in _JOB_FIELDS[1:])
        self._conn().execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*_job_values(job)[1:], job.id])

    @staticmethod
    def _check_fields(fields: dict[str, Any], forbidden: tuple[str, ...] = ("id",)) -> None:
        bad = sorted(name for name in fields if name not in _JOB_FIELDS or name in forbidden)
        if bad:
            raise TypeError(f"cannot set job field(s) {', '.join(bad)}")
        if "state" in fields:
            _check_state(fields["state"])

    def update_job(self, job_id: str, **fields: Any) -> Job:
        self._check_fields(fields)
        with self.transaction():
            job = attrs.evolve(self.get_job(job_id), **fields)
            self._write_job(job)
        return job

    def transition(self, job_id: str, from_states: Iterable[str], to_state: str, **fields: Any) -> Job | None:
        self._check_fields(fields, forbidden=("id", "state"))
        _check_state(to_state)
        allowed = set(from_states)
        with self.transaction():  # BEGIN IMMEDIATE: no other writer between the read and the write
            job = self.get_job(job_id)
            if job.state not in allowed:
                return None
            job = attrs.evolve(job, state=to_state, **fields)
            self._write_job(job)
        return job

    def queue_position(self, job_id: str) -> int | None:
        """1-based, in the order the allocator serves: priority desc, then created_at, then id."""
        job = self.get_job(job_id)
        if job.state != QUEUED:
            return None
        ahead = self._conn().execute(
            "SELECT COUNT(*) FROM jobs WHERE state = ? AND (priority > ? OR (priority = ? AND "
            "(created_at < ? OR (created_at = ? AND id < ?))))",
            (QUEUED, job.priority, job.priority, job.created_at, job.created_at, job.id),
        ).fetchone()[0]
        return int(ahead) + 1

    # -- events --

    def append_event(self, event: Event) -> Event:
        with self.transaction():
            try:
                cursor = self._conn().execute(
                    "INSERT INTO events (job_id, type, timestamp, level, version, data) VALUES (?, ?, ?, ?, ?, ?)",
                    (event.job_id, event.type, event.timestamp, event.level, event.version, _dumps(event.data)),
                )
            except sqlite3.IntegrityError as exc:
                raise JobError(f"unknown job {event.job_id!r}") from exc
        assert cursor.lastrowid is not None
        return attrs.evolve(event, id=cursor.lastrowid)

    def read_events(self, job_id: str, after_id: int = 0, limit: int | None = None) -> list[Event]:
        rows = self._conn().execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
            (job_id, after_id, -1 if limit is None else limit),
        )
        return [_row_to_event(row) for row in rows]

    def last_event_id(self, job_id: str) -> int:
        row = self._conn().execute("SELECT MAX(id) FROM events WHERE job_id = ?", (job_id,)).fetchone()
        return int(row[0] or 0)

    def wait_events(self, job_id: str, after_id: int, timeout: float, limit: int | None = None) -> list[Event]:
        """Long-poll without a server-side notifier: ``PRAGMA data_version`` (changes when any *other*
        connection commits) is checked every ``POLL_INTERVAL``; same-process commits also wake us at once."""
        conn = self._conn()
        if self._local.depth:
            raise RuntimeError("wait_events inside a transaction would hold the write lock while waiting")
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                generation = self._generation
            data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            events = self.read_events(job_id, after_id, limit)
            if events:
                return events
            while True:  # wait for any commit, then re-read
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                with self._changed:
                    if self._generation == generation:
                        self._changed.wait(min(POLL_INTERVAL, remaining))
                    if self._generation != generation:
                        break
                if conn.execute("PRAGMA data_version").fetchone()[0] != data_version:
                    break

    # -- commands --

    def post_command(self, job_id: str, command: str) -> int:
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; expected one of: {', '.join(COMMANDS)}")
        with self.transaction():
            self.get_job(job_id)
            cursor = self._conn().execute(
                "INSERT INTO commands (job_id, command, created_at) VALUES (?, ?, ?)",
                (job_id, command, time.time()),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def take_commands(self, job_id: str) -> list[str]:
        """Pending commands in posting order; each is returned to exactly one caller."""
        with self.transaction():
            conn = self._conn()
            rows = conn.execute(
                "SELECT id, command FROM commands WHERE job_id = ? AND taken_at IS NULL ORDER BY id", (job_id,)
            ).fetchall()
            conn.execute("UPDATE commands SET taken_at = ? WHERE job_id = ? AND taken_at IS NULL",
                         (time.time(), job_id))  # same rows: the write lock keeps new ones out meanwhile
        return [row["command"] for row in rows]

    # -- settings --

    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self._conn().execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def set_setting(self, key: str, value: Any) -> None:
        with self.transaction():
            self._conn().execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                                 (key, json.dumps(value)))


def open_store(home: Path | None = None) -> SQLiteStore:
    """The store of a SimpleTuner home (default ``$SIMPLETUNER_HOME``)."""
    return SQLiteStore((home if home is not None else paths.home()) / "state.db")
