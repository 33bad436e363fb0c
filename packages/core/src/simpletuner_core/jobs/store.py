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
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from simpletuner_core import paths
from simpletuner_core.auth.models import ApiKey, DuplicateUserError, Session, User
from simpletuner_core.events.types import Event
from simpletuner_core.jobs.models import ALL_STATES, QUEUED, Job, JobError

COMMANDS = ("stop", "cancel", "validate", "checkpoint")
BUSY_TIMEOUT_MS = 10_000
POLL_INTERVAL = 0.025  # seconds between cross-process change checks in wait_events
DECODE_BATCH_CHARS = 1 << 20  # payload characters decoded per json.loads call (see _loads_many)


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

    def read_events_of_types(self, job_id: str, types: Iterable[str], after_id: int = 0, limit: int | None = None,
                             newest_first: bool = False) -> list[Event]:
        """Like :meth:`read_events`, only events whose type is in ``types`` (charts read thousands of status
        events without decoding the rest); ``newest_first`` reads backwards (``limit=1``: the latest)."""
        ...

    def read_event_fields(self, job_id: str, event_type: str, fields: Sequence[str], after_id: int = 0,
                          upto_id: int | None = None) -> list[tuple[Any, ...]]:
        """``(id, *values)`` per event of ``event_type`` with ``after_id < id <= upto_id``: the payload's top-level
        ``fields`` (None when missing), without building events (a chart of a 100k-step run reads three numbers
        per step)."""
        ...

    def last_event_id(self, job_id: str) -> int: ...

    def wait_events(self, job_id: str, after_id: int, timeout: float, limit: int | None = None) -> list[Event]:
        """Events after ``after_id`` as soon as any exist (any process), or [] after ``timeout`` seconds."""
        ...

    def post_command(self, job_id: str, command: str) -> int: ...

    def take_commands(self, job_id: str) -> list[str]: ...

    def get_setting(self, key: str, default: Any = None) -> Any: ...

    def set_setting(self, key: str, value: Any) -> None: ...

    # -- accounts (see simpletuner_core.auth); lookups return None for unknown ids --

    def create_user(self, username: str, email: str, password_hash: str, levels: Iterable[str] = (),
                    is_active: bool = True) -> User:
        """Raises :class:`DuplicateUserError` when the username or email is taken (case-insensitively)."""
        ...

    def get_user(self, user_id: int) -> User | None: ...

    def find_user(self, login: str) -> User | None:
        """By username, or by email when no username matches; case-insensitive."""
        ...

    def list_users(self) -> list[User]: ...

    def update_user(self, user_id: int, **fields: Any) -> User | None:
        """Fields: email, password_hash, levels, is_active, last_login_at."""
        ...

    def delete_user(self, user_id: int) -> bool:
        """Also deletes the user's API keys and sessions."""
        ...

    def count_users(self, level: str | None = None, active_only: bool = False) -> int: ...

    def create_api_key(self, user_id: int, name: str, key_prefix: str, key_hash: str,
                       scoped_permissions: Iterable[str] | None = None,
                       expires_at: float | None = None) -> ApiKey: ...

    def get_api_key(self, key_id: int) -> ApiKey | None: ...

    def find_api_keys(self, key_prefix: str) -> list[ApiKey]:
        """Candidates sharing the clear prefix; the caller compares hashes in constant time."""
        ...

    def list_api_keys(self, user_id: int) -> list[ApiKey]: ...

    def revoke_api_key(self, key_id: int) -> bool:
        """Marks the key inactive (kept for listings); False when unknown or already revoked."""
        ...

    def touch_api_key(self, key_id: int, when: float) -> None: ...

    def create_session(self, token_hash: str, user_id: int, expires_at: float) -> Session: ...

    def get_session(self, token_hash: str) -> Session | None:
        """The row even if expired: the caller decides (and deletes it)."""
        ...

    def delete_session(self, token_hash: str) -> bool: ...

    def delete_user_sessions(self, user_id: int, keep: str | None = None) -> int:
        """Log a user out everywhere (password change, deactivation), except the session hashed ``keep``."""
        ...

    def purge_expired_sessions(self, now: float | None = None) -> int: ...


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


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Accounts. Levels get their own table so "how many active admins" is one indexed query; names and emails
    are unique case-insensitively so ``Admin`` and ``admin`` cannot be two people. Only hashes of secrets."""
    for statement in (
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            username TEXT NOT NULL UNIQUE COLLATE NOCASE, email TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL, is_active INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, last_login_at REAL)""",
        """CREATE TABLE user_levels (
            user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            level TEXT NOT NULL, PRIMARY KEY (user_id, level))""",
        "CREATE INDEX user_levels_by_level ON user_levels (level, user_id)",
        """CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            name TEXT NOT NULL, key_prefix TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
            scoped_permissions TEXT, created_at REAL NOT NULL, last_used_at REAL, expires_at REAL,
            is_active INTEGER NOT NULL DEFAULT 1)""",
        "CREATE INDEX api_keys_by_prefix ON api_keys (key_prefix)",
        "CREATE INDEX api_keys_by_user ON api_keys (user_id, id)",
        """CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at REAL NOT NULL, expires_at REAL NOT NULL)""",
        "CREATE INDEX sessions_by_user ON sessions (user_id)",
        "CREATE INDEX sessions_by_expiry ON sessions (expires_at)",
    ):
        conn.execute(statement)


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """Executors: where a job may run (``target``, ``worker_labels``) and where it does (``executor``)."""
    for statement in (
        "ALTER TABLE jobs ADD COLUMN target TEXT NOT NULL DEFAULT 'auto'",
        "ALTER TABLE jobs ADD COLUMN worker_labels TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE jobs ADD COLUMN executor TEXT",
        "ALTER TABLE jobs ADD COLUMN worker_id TEXT",
        "ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
    ):
        conn.execute(statement)


def _migrate_v4(conn: sqlite3.Connection) -> None:
    """Remote workers (see ``simpletuner_core.workers``): the machines, the messages streamed to each (dispatch,
    commands, drain; replayable by id), each attempt of a job on a worker (with the watermark of the worker's
    events already stored, so a re-sent batch is stored once) and the dataset files a dispatch lets it fetch."""
    for statement in (
        """CREATE TABLE workers (
            id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE, worker_type TEXT NOT NULL,
            labels TEXT NOT NULL DEFAULT '{}', token_hash TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
            gpu_count INTEGER NOT NULL DEFAULT 0, gpu_name TEXT, gpu_vram_gb REAL, accelerator TEXT,
            cpu_count INTEGER, hostname TEXT, agent_version TEXT, created_at REAL NOT NULL, registered_at REAL,
            last_heartbeat REAL)""",
        """CREATE TABLE worker_messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            worker_id TEXT NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
            type TEXT NOT NULL, data TEXT NOT NULL, created_at REAL NOT NULL)""",
        "CREATE INDEX worker_messages_by_worker ON worker_messages (worker_id, id)",
        """CREATE TABLE worker_runs (
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, attempt INTEGER NOT NULL,
            worker_id TEXT NOT NULL, dispatched_at REAL NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0,
            last_checkpoint TEXT, outputs TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (job_id, attempt))""",
        "CREATE INDEX worker_runs_by_worker ON worker_runs (worker_id)",
        """CREATE TABLE worker_files (
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, sha256 TEXT NOT NULL,
            path TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (job_id, sha256))""",
        "CREATE INDEX worker_files_by_hash ON worker_files (sha256)",
    ):
        conn.execute(statement)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_v1, _migrate_v2, _migrate_v3, _migrate_v4]
SCHEMA_VERSION = len(MIGRATIONS)

# --- row mapping --------------------------------------------------------------------------------------------

_JOB_FIELDS = tuple(f.name for f in attrs.fields(Job))
_JSON_FIELDS = frozenset({"config", "device_ids", "allocated_gpus", "worker_labels"})
_TUPLE_FIELDS = frozenset({"device_ids", "allocated_gpus"})
_BOOL_FIELDS = frozenset({"any_gpu", "cpu_slot", "resumable"})
_JOB_COLUMNS = ", ".join(f'"{name}"' for name in _JOB_FIELDS)
_EVENT_COLUMNS = "id, job_id, type, timestamp, level, version, data"
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def _loads_many(texts: list[str]) -> list[Any]:
    """Payloads decoded a batch at a time (one ``json.loads`` over a JSON array of up to ``DECODE_BATCH_CHARS``):
    for thousands of small payloads the per-call overhead is most of the cost. Valid because every payload is
    ``_dumps`` output."""
    payloads: list[Any] = []
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= DECODE_BATCH_CHARS:
            payloads += json.loads("[" + ",".join(batch) + "]")
            batch, size = [], 0
    if batch:
        payloads += json.loads("[" + ",".join(batch) + "]")
    return payloads


def _row_to_event(row: sqlite3.Row) -> Event:
    return Event(type=row["type"], job_id=row["job_id"], data=json.loads(row["data"]), id=row["id"],
                 timestamp=row["timestamp"], level=row["level"], version=row["version"])


_USER_COLUMNS = ("u.id, u.username, u.email, u.password_hash, u.is_active, u.created_at, u.updated_at, "
                 "u.last_login_at")
_USER_FIELDS = frozenset({"email", "password_hash", "levels", "is_active", "last_login_at"})
_KEY_COLUMNS = ("id, user_id, name, key_prefix, key_hash, created_at, last_used_at, expires_at, is_active, "
                "scoped_permissions")


def _rows_to_users(rows: Iterable[sqlite3.Row]) -> list[User]:
    """Rows of users LEFT JOIN user_levels ordered by user id: one User per id, levels gathered."""
    users: dict[int, dict[str, Any]] = {}
    for row in rows:
        values = users.get(row["id"])
        if values is None:
            values = users[row["id"]] = {key: row[key] for key in (
                "id", "username", "email", "password_hash", "created_at", "updated_at", "last_login_at")}
            values["is_active"], values["levels"] = bool(row["is_active"]), []
        if row["level"] is not None:
            values["levels"].append(row["level"])
    return [User(**{**values, "levels": tuple(sorted(values["levels"]))}) for values in users.values()]


def _row_to_key(row: sqlite3.Row) -> ApiKey:
    scoped = row["scoped_permissions"]
    return ApiKey(id=row["id"], user_id=row["user_id"], name=row["name"], key_prefix=row["key_prefix"],
                  key_hash=row["key_hash"], created_at=row["created_at"], last_used_at=row["last_used_at"],
                  expires_at=row["expires_at"], is_active=bool(row["is_active"]),
                  scoped_permissions=None if scoped is None else tuple(json.loads(scoped)))


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

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, for subsystems that keep their own tables' SQL next to their logic
        (``simpletuner_core.workers.tables``); use it inside :meth:`transaction` for writes."""
        return self._conn()

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

    def read_events_of_types(self, job_id: str, types: Iterable[str], after_id: int = 0, limit: int | None = None,
                             newest_first: bool = False) -> list[Event]:
        types = list(dict.fromkeys(types))
        if not types:
            return []
        marks = ", ".join("?" for _ in types)
        order = "id DESC" if newest_first else "id"
        rows = self._conn().execute(  # events_by_job (job_id, id) narrows to the job; type filters its rows
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE job_id = ? AND id > ? AND type IN ({marks}) "
            f"ORDER BY {order} LIMIT ?",
            (job_id, after_id, *types, -1 if limit is None else limit),
        ).fetchall()
        payloads = _loads_many([row[6] for row in rows])
        # Unpacked by position (the order of _EVENT_COLUMNS): sqlite3.Row lookups by name cost a third of the
        # Event construction when charts read ten thousand of them.
        return [Event(type=kind, job_id=job, data=data, id=event_id, timestamp=timestamp, level=level,
                      version=version)
                for (event_id, job, kind, timestamp, level, version, _), data in zip(rows, payloads, strict=True)]

    def read_event_fields(self, job_id: str, event_type: str, fields: Sequence[str], after_id: int = 0,
                          upto_id: int | None = None) -> list[tuple[Any, ...]]:
        bad = [name for name in fields if not _FIELD_NAME.match(name)]
        if bad:
            raise ValueError(f"field names must be identifiers, got {bad}")
        where = "job_id = ? AND type = ? AND id > ? AND id <= ?"
        params = (job_id, event_type, after_id, 2**62 if upto_id is None else upto_id)
        extracts = ", ".join(f"json_extract(data, '$.{name}')" for name in fields)
        try:  # SQLite extracts the numbers: no Python object per payload
            rows = self._conn().execute(f"SELECT id, {extracts} FROM events WHERE {where} ORDER BY id",
                                        params).fetchall()
            return [tuple(row) for row in rows]
        except sqlite3.OperationalError:  # a NaN/Infinity payload is not JSON to SQLite before 3.42: decode here
            rows = self._conn().execute(f"SELECT id, data FROM events WHERE {where} ORDER BY id", params).fetchall()
            payloads = _loads_many([row[1] for row in rows])
            return [(row[0], *(data.get(name) for name in fields)) for row, data in zip(rows, payloads, strict=True)]

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


    # -- accounts --

    def _users(self, where: str = "", params: Iterable[Any] = ()) -> list[User]:
        rows = self._conn().execute(
            f"SELECT {_USER_COLUMNS}, l.level FROM users u LEFT JOIN user_levels l ON l.user_id = u.id "
            f"{where} ORDER BY u.id, l.level", tuple(params))
        return _rows_to_users(rows)

    def _check_unique(self, field: str, value: str, user_id: int | None = None) -> None:
        row = self._conn().execute(f"SELECT id FROM users WHERE {field} = ?", (value,)).fetchone()
        if row is not None and row["id"] != user_id:
            raise DuplicateUserError(field, value)

    def _set_levels(self, user_id: int, levels: Iterable[str]) -> None:
        conn = self._conn()
        conn.execute("DELETE FROM user_levels WHERE user_id = ?", (user_id,))
        conn.executemany("INSERT INTO user_levels (user_id, level) VALUES (?, ?)",
                         [(user_id, level) for level in sorted(set(levels))])

    def create_user(self, username: str, email: str, password_hash: str, levels: Iterable[str] = (),
                    is_active: bool = True) -> User:
        now = time.time()
        with self.transaction():  # the write lock makes check-then-insert race-free across processes
            self._check_unique("username", username)
            self._check_unique("email", email)
            cursor = self._conn().execute(
                "INSERT INTO users (username, email, password_hash, is_active, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (username, email, password_hash, int(is_active), now, now))
            assert cursor.lastrowid is not None
            self._set_levels(cursor.lastrowid, levels)
            user = self.get_user(cursor.lastrowid)
        assert user is not None
        return user

    def get_user(self, user_id: int) -> User | None:
        users = self._users("WHERE u.id = ?", (user_id,))
        return users[0] if users else None

    def find_user(self, login: str) -> User | None:
        users = self._users("WHERE u.username = ?", (login,)) or self._users("WHERE u.email = ?", (login,))
        return users[0] if users else None

    def list_users(self) -> list[User]:
        return self._users()

    def update_user(self, user_id: int, **fields: Any) -> User | None:
        bad = sorted(set(fields) - _USER_FIELDS)
        if bad:
            raise TypeError(f"cannot set user field(s) {', '.join(bad)}")
        levels = fields.pop("levels", None)
        with self.transaction():
            if self.get_user(user_id) is None:
                return None
            if "email" in fields:
                self._check_unique("email", fields["email"], user_id)
            if "is_active" in fields:
                fields["is_active"] = int(fields["is_active"])
            fields["updated_at"] = time.time()
            assignments = ", ".join(f"{name} = ?" for name in fields)
            self._conn().execute(f"UPDATE users SET {assignments} WHERE id = ?", [*fields.values(), user_id])
            if levels is not None:
                self._set_levels(user_id, levels)
            return self.get_user(user_id)

    def delete_user(self, user_id: int) -> bool:
        with self.transaction():  # keys, sessions and levels go with it (ON DELETE CASCADE)
            return self._conn().execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount > 0

    def count_users(self, level: str | None = None, active_only: bool = False) -> int:
        sql, params = "SELECT COUNT(*) FROM users u", []
        if level is not None:
            sql += " JOIN user_levels l ON l.user_id = u.id AND l.level = ?"
            params.append(level)
        if active_only:
            sql += " WHERE u.is_active = 1"
        return int(self._conn().execute(sql, params).fetchone()[0])

    def create_api_key(self, user_id: int, name: str, key_prefix: str, key_hash: str,
                       scoped_permissions: Iterable[str] | None = None,
                       expires_at: float | None = None) -> ApiKey:
        scoped = None if scoped_permissions is None else _dumps(sorted(set(scoped_permissions)))
        with self.transaction():
            cursor = self._conn().execute(
                "INSERT INTO api_keys (user_id, name, key_prefix, key_hash, scoped_permissions, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user_id, name, key_prefix, key_hash, scoped, time.time(), expires_at))
        assert cursor.lastrowid is not None
        key = self.get_api_key(cursor.lastrowid)
        assert key is not None
        return key

    def get_api_key(self, key_id: int) -> ApiKey | None:
        row = self._conn().execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else _row_to_key(row)

    def find_api_keys(self, key_prefix: str) -> list[ApiKey]:
        rows = self._conn().execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_prefix = ?",
                                    (key_prefix,))
        return [_row_to_key(row) for row in rows]

    def list_api_keys(self, user_id: int) -> list[ApiKey]:
        rows = self._conn().execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY id",
                                    (user_id,))
        return [_row_to_key(row) for row in rows]

    def revoke_api_key(self, key_id: int) -> bool:
        with self.transaction():
            cursor = self._conn().execute("UPDATE api_keys SET is_active = 0 WHERE id = ? AND is_active = 1",
                                          (key_id,))
        return cursor.rowcount > 0

    def touch_api_key(self, key_id: int, when: float) -> None:
        with self.transaction():
            self._conn().execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (when, key_id))

    def create_session(self, token_hash: str, user_id: int, expires_at: float) -> Session:
        session = Session(token_hash=token_hash, user_id=user_id, created_at=time.time(),
                          expires_at=expires_at)
        with self.transaction():
            self._conn().execute(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (token_hash, user_id, session.created_at, expires_at))
        return session

    def get_session(self, token_hash: str) -> Session | None:
        row = self._conn().execute("SELECT token_hash, user_id, created_at, expires_at FROM sessions "
                                   "WHERE token_hash = ?", (token_hash,)).fetchone()
        return None if row is None else Session(**{key: row[key] for key in row.keys()})

    def delete_session(self, token_hash: str) -> bool:
        with self.transaction():
            cursor = self._conn().execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
        return cursor.rowcount > 0

    def delete_user_sessions(self, user_id: int, keep: str | None = None) -> int:
        with self.transaction():
            return self._conn().execute("DELETE FROM sessions WHERE user_id = ? AND token_hash IS NOT ?",
                                        (user_id, keep)).rowcount

    def purge_expired_sessions(self, now: float | None = None) -> int:
        with self.transaction():
            return self._conn().execute("DELETE FROM sessions WHERE expires_at <= ?",
                                        (time.time() if now is None else now,)).rowcount


def open_store(home: Path | None = None) -> SQLiteStore:
    """The store of a SimpleTuner home (default ``$SIMPLETUNER_HOME``)."""
    return SQLiteStore((home if home is not None else paths.home()) / "state.db")
