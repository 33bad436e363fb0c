"""Accounts in the SQLite store: migration v2, users with levels, API keys, sessions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from simpletuner_core.auth import DuplicateUserError
from simpletuner_core.jobs.models import Job
from simpletuner_core.jobs.store import MIGRATIONS, SCHEMA_VERSION, SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "state.db")


def test_v1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](raw)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO jobs (id, config, state, created_at) VALUES ('old', '{}', 'queued', 1.0)")
    raw.close()
    store = SQLiteStore(path)
    assert SCHEMA_VERSION == len(MIGRATIONS)
    assert store.get_job("old").state == "queued"
    assert store.count_users() == 0 and store.create_user("ann", "ann@example.com", "h").id == 1
    store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_users_unique_case_insensitively_with_levels(store: SQLiteStore) -> None:
    ann = store.create_user("Ann", "ann@example.com", "hash-a", levels=["researcher", "viewer", "viewer"])
    assert (ann.username, ann.levels, ann.is_active) == ("Ann", ("researcher", "viewer"), True)
    assert "hash-a" not in repr(ann)
    with pytest.raises(DuplicateUserError) as exc:
        store.create_user("ANN", "other@example.com", "h")
    assert exc.value.field == "username"
    with pytest.raises(DuplicateUserError) as exc:
        store.create_user("bob", "ANN@example.com", "h")
    assert exc.value.field == "email"
    store.create_user("bob", "bob@example.com", "h", levels=["admin"], is_active=False)
    assert store.find_user("ann") == ann and store.find_user("Ann@Example.com") == ann
    assert store.find_user("nobody") is None and store.get_user(999) is None
    assert [u.username for u in store.list_users()] == ["Ann", "bob"]
    assert store.count_users() == 2 and store.count_users(level="admin") == 1
    assert store.count_users(level="admin", active_only=True) == 0


def test_update_and_delete_user(store: SQLiteStore) -> None:
    ann = store.create_user("ann", "ann@example.com", "h1", levels=["viewer"])
    store.create_user("bob", "bob@example.com", "h2")
    updated = store.update_user(ann.id, email="ann@new.example", levels=["admin"], is_active=False,
                                password_hash="h3", last_login_at=5.0)
    assert updated is not None
    got = (updated.email, updated.levels, updated.is_active, updated.password_hash, updated.last_login_at)
    assert got == ("ann@new.example", ("admin",), False, "h3", 5.0)
    assert updated.updated_at >= ann.updated_at
    with pytest.raises(DuplicateUserError):
        store.update_user(ann.id, email="BOB@example.com")
    assert store.update_user(ann.id, email="ann@new.example") is not None  # own address is not a duplicate
    with pytest.raises(TypeError, match="username"):
        store.update_user(ann.id, username="x")
    assert store.update_user(999, email="x@example.com") is None
    key = store.create_api_key(ann.id, "k", "st_abcdefgh", "digest")
    store.create_session("session-hash", ann.id, expires_at=1e12)
    assert store.delete_user(ann.id) and not store.delete_user(ann.id)
    assert store.get_api_key(key.id) is None and store.get_session("session-hash") is None  # cascaded


def test_failed_transaction_leaves_no_user(store: SQLiteStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.create_user("ann", "ann@example.com", "h")
        raise RuntimeError("abort")
    assert store.count_users() == 0


def test_api_keys(store: SQLiteStore) -> None:
    ann = store.create_user("ann", "ann@example.com", "h")
    key = store.create_api_key(ann.id, "ci", "st_abcdefgh", "digest-1", scoped_permissions=["b", "a", "a"],
                               expires_at=123.0)
    plain = store.create_api_key(ann.id, "plain", "st_abcdefgh", "digest-2")
    assert key.scoped_permissions == ("a", "b") and plain.scoped_permissions is None
    assert "digest-1" not in repr(key)
    assert [k.id for k in store.find_api_keys("st_abcdefgh")] == [key.id, plain.id]
    assert store.find_api_keys("st_zzzzzzzz") == []
    assert [k.name for k in store.list_api_keys(ann.id)] == ["ci", "plain"]
    store.touch_api_key(key.id, 99.0)
    assert store.get_api_key(key.id).last_used_at == 99.0  # type: ignore[union-attr]
    assert store.revoke_api_key(key.id) and not store.revoke_api_key(key.id) and not store.revoke_api_key(999)
    assert store.get_api_key(key.id).is_active is False  # type: ignore[union-attr]


def test_sessions(store: SQLiteStore) -> None:
    ann = store.create_user("ann", "ann@example.com", "h")
    for name, expires in (("s1", 10.0), ("s2", 1e12), ("s3", 1e12)):
        store.create_session(name, ann.id, expires_at=expires)
    assert store.get_session("s2").user_id == ann.id  # type: ignore[union-attr]
    assert store.get_session("missing") is None
    assert store.purge_expired_sessions(now=100.0) == 1 and store.get_session("s1") is None
    assert store.delete_user_sessions(ann.id, keep="s3") == 1 and store.get_session("s3") is not None
    assert store.delete_session("s3") and not store.delete_session("s3")


def test_accounts_persist_across_processes_opening_the_file(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "state.db")
    first.create_user("ann", "ann@example.com", "h", levels=["viewer"])
    first.create_job(Job("j", {}, user="ann"))
    second = SQLiteStore(tmp_path / "state.db")
    assert second.find_user("ann").levels == ("viewer",)  # type: ignore[union-attr]
