"""Run one training job in this process (CLI mode): events go to ``$SIMPLETUNER_HOME/jobs/<id>/events.jsonl``."""

from __future__ import annotations

import json
import os
import secrets
import time
import traceback
from pathlib import Path
from typing import Any

from simpletuner_core.config import warnings_for
from simpletuner_core.config.errors import ConfigInvalid
from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.events.log import JsonlEventLog


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def add_sinks(emitter: EventEmitter, cfg: Any, job_dir: Path, registry: Any) -> None:
    """Every registered event sink whose factory wants this job (the console bar, webhooks, ...)."""
    for spec in registry.event_sinks.values():
        sink = spec.factory(cfg, job_dir)
        if sink is not None:
            emitter.add_sink(sink)


def run_job(cfg: Any, home: Path, registry: Any, job_id: str | None = None) -> tuple[int, Any]:
    """Train ``cfg``; returns (exit code, TrainResult or None). Failures become a ``job.failed`` event."""
    from simpletuner_core.training.checkpoint import CheckpointError
    from simpletuner_core.training.data_setup import PreflightRejected
    from simpletuner_core.training.engine import Trainer, config_hash

    job_id = job_id or new_job_id()
    job_dir = home / "jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    emitter = EventEmitter(job_id, JsonlEventLog(job_dir / "events.jsonl"))
    try:
        add_sinks(emitter, cfg, job_dir, registry)
    except (ValueError, OSError) as exc:  # e.g. a webhook_config the sink cannot use
        emitter.emit("job.failed", level="error", reason=f"event sinks: {exc}", resumable=False)
        emitter.close()
        return 2, None
    (job_dir / "config.json").write_text(json.dumps({f"--{k}": v for k, v in _plain(cfg).items()}, indent=2))
    emitter.emit("job.started", pid=os.getpid(), config_hash=config_hash(cfg), job_dir=str(job_dir))
    for note in warnings_for(cfg):
        emitter.log(note, level="warning")
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
        emitter.emit("job.cancelled", level="warning", step=None, reason="interrupted")
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
