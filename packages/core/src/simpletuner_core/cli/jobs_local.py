"""Run one training job in the foreground (``simpletuner train``), recorded in the store like any job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simpletuner_core.jobs.models import new_job_id


def run_job(cfg: Any, home: Path, registry: Any, job_id: str | None = None) -> tuple[int, Any]:
    """Train ``cfg`` now, in this process; returns (exit code, TrainResult or None)."""
    from simpletuner_core.jobs.execute import execute
    from simpletuner_core.jobs.store import open_store

    store = open_store(home)
    try:
        return execute(cfg, home, registry, job_id or new_job_id(), store)
    finally:
        store.close()
