"""Shared set-up for the job-runner tests: a tiny-model environment in a fresh state directory."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tiny_config
from simpletuner_core.config.environments import create_environment, save_environment
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import SQLiteStore, open_store


def make_env(home: Path, tiny: Path, images: Path, name: str = "toy", **overrides: Any) -> str:
    create_environment(name, model_family="pixart_sigma", home=home)
    raw = tiny_config(home, tiny, images, **{"output_dir": str(home / "output" / name), **overrides})
    save_environment(name, raw, home=home)
    return name


def runner(home: Path, **kw: Any) -> tuple[Runner, SQLiteStore]:
    os.environ["SIMPLETUNER_HOME"] = str(home)
    store = open_store(home)
    return Runner(store, home, **kw), store


def wait_for(check: Callable[[], Any], timeout: float = 120.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {check}")


def final(store: SQLiteStore, job_id: str, timeout: float = 120.0) -> m.Job:
    return wait_for(lambda: (j := store.get_job(job_id)).state in m.FINAL_STATES and j, timeout)


def events_of(store: SQLiteStore, job_id: str, kind: str | None = None) -> list[Any]:
    return [e for e in store.read_events(job_id) if kind is None or e.type == kind]
