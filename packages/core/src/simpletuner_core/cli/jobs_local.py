"""Run one training job in this process (CLI mode): events go to ``$SIMPLETUNER_HOME/jobs/<id>/events.jsonl``."""

from __future__ import annotations

import json
import os
import secrets
import time
import traceback
from pathlib import Path
from typing import Any

from simpletuner_core.config.errors import ConfigInvalid
from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.events.log import JsonlEventLog


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def open_emitter(cfg: Any, job_id: str, home: Path, registry: Any) -> tuple[EventEmitter, Path]:
    job_dir = home / "jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    emitter = EventEmitter(job_id, JsonlEventLog(job_dir / "events.jsonl"))
    for spec in registry.event_sinks.values():
        sink = spec.factory(cfg, job_dir)
        if sink is not None:
            emitter.add_sink(sink)
    return emitter, job_dir


def run_job(cfg: Any, home: Path, registry: Any, job_id: str | None = None) -> tuple[int, Any]:
    """Train ``cfg``; returns (exit code, TrainResult or None). Failures become a ``job.failed`` event."""
    from simpletuner_core.training.checkpoint import CheckpointError
    from simpletuner_core.training.data_setup import PreflightRejected
    from simpletuner_core.training.engine import Trainer, config_hash

    job_id = job_id or new_job_id()
    emitter, job_dir = open_emitter(cfg, job_id, home, registry)
    (job_dir / "config.json").write_text(json.dumps({f"--{k}": v for k, v in _plain(cfg).items()}, indent=2))
    emitter.emit("job.started", pid=os.getpid(), config_hash=config_hash(cfg), job_dir=str(job_dir))
    try:
        result = Trainer(cfg, job_id=job_id, home=home, emitter=emitter, registry=registry).run()
        return 0, result
    except PreflightRejected as exc:
        emitter.emit("job.failed", level="error", reason="dataset plan rejected: " + str(exc), resumable=False,
                     plan=exc.plan.to_dict())
        print(exc.plan.render())
        return 2, None
    except (ConfigInvalid, CheckpointError) as exc:
        emitter.emit("job.failed", level="error", reason=str(exc), resumable=False)
        return 2, None
    except KeyboardInterrupt:
        emitter.emit("job.cancelled", level="warning", step=None, reason="interrupted before training started")
        raise
    except Exception as exc:
        emitter.emit("job.failed", level="error", reason=f"{type(exc).__name__}: {exc}", resumable=True,
                     traceback=traceback.format_exc(limit=20))
        return 1, None
    finally:
        emitter.close()


def _plain(cfg: Any) -> dict[str, Any]:
    from simpletuner_core.config.model import unstructure

    return unstructure(cfg)
