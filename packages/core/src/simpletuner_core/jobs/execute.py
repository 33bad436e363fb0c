"""Run one job's training in this process, with the store as the event log and the command channel.

Used by ``simpletuner train`` (in the foreground) and by the trainer process the runner spawns. Every way a run
can end is recorded twice: as an event (``job.completed``/``job.stopped``/``job.cancelled``/``job.failed`` with a
reason a user can act on) and as the job's final state, which releases its GPUs or CPU slot.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from simpletuner_core.config import warnings_for
from simpletuner_core.config.errors import ConfigInvalid
from simpletuner_core.config.model import unstructure
from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.events.log import JsonlMirror
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.event_log import StoreEventLog
from simpletuner_core.jobs.processes import start_time


def add_sinks(emitter: EventEmitter, cfg: Any, job_dir: Path, registry: Any) -> None:
    """Every registered event sink whose factory wants this job (the console bar, webhooks, ...)."""
    for spec in registry.event_sinks.values():
        sink = spec.factory(cfg, job_dir)
        if sink is not None:
            emitter.add_sink(sink)


class CommandPoller:
    """Moves commands posted to the store into the trainer's :class:`Control` (applied after the next sync)."""

    def __init__(self, store: Any, job_id: str, control: Any, interval: float = 0.2) -> None:
        self.store, self.job_id, self.control, self.interval = store, job_id, control, interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"commands-{job_id}", daemon=True)

    def __enter__(self) -> CommandPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._done.wait(self.interval):
                for command in self.store.take_commands(self.job_id):
                    with self.control.lock:
                        setattr(self.control, command, True)
        finally:
            self.store.close()  # this thread's connection


def _has_checkpoint(cfg: Any) -> bool:
    from simpletuner_core.training.checkpoint import list_checkpoints

    return bool(cfg.output_dir and list_checkpoints(Path(cfg.output_dir).expanduser()))


def execute(cfg: Any, home: Path, registry: Any, job_id: str, store: Any) -> tuple[int, Any]:
    """Train ``cfg`` as job ``job_id``; returns (exit code, TrainResult or None)."""
    from simpletuner_core.training.checkpoint import CheckpointError
    from simpletuner_core.training.control import Control
    from simpletuner_core.training.data_setup import PreflightRejected
    from simpletuner_core.training.engine import Trainer
    from simpletuner_core.training.run_identity import config_hash

    if int(os.environ.get("RANK", "0")) != 0:
        return _follow_the_main_process(cfg, home, registry, job_id)
    job_dir = home / "jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    wire = {f"--{k}": v for k, v in unstructure(cfg).items()}
    pid = os.getpid()
    fields = {"state": m.RUNNING, "pid": pid, "pid_start_time": start_time(pid), "started_at": time.time(),
              "output_dir": cfg.output_dir, "reason": None}
    try:
        store.update_job(job_id, **fields)
    except m.JobError:
        store.create_job(m.Job(id=job_id, config=wire, **fields))
    emitter = EventEmitter(job_id, StoreEventLog(store, job_id), [JsonlMirror(job_dir / "events.jsonl")])

    def finish(state: str, code: int, result: Any = None, **event: Any) -> tuple[int, Any]:
        kind = {m.FAILED: "job.failed", m.CANCELLED: "job.cancelled"}.get(state)
        if kind:
            emitter.emit(kind, level="error" if state == m.FAILED else "warning", **event)
        store.update_job(job_id, state=state, finished_at=time.time(), reason=event.get("reason"),
                         resumable=state == m.STOPPED or (state == m.FAILED and bool(event.get("resumable"))))
        return code, result

    try:
        try:
            add_sinks(emitter, cfg, job_dir, registry)
        except (ValueError, OSError) as exc:  # e.g. a webhook_config the sink cannot use
            return finish(m.FAILED, 2, reason=f"event sinks: {exc}", resumable=False)
        (job_dir / "config.json").write_text(json.dumps(wire, indent=2, default=str))
        emitter.emit("job.started", pid=pid, config_hash=config_hash(cfg), job_dir=str(job_dir))
        for note in warnings_for(cfg):
            emitter.log(note, level="warning")
        control = Control()
        with CommandPoller(store, job_id, control):
            result = Trainer(cfg, job_id=job_id, home=home, emitter=emitter, registry=registry,
                             control=control).run()
        state = {"completed": m.COMPLETED, "stopped": m.STOPPED, "cancelled": m.CANCELLED}[result.status]
        store.update_job(job_id, state=state, finished_at=time.time(), resumable=state == m.STOPPED)
        return 0, result
    except PreflightRejected as exc:
        print(exc.plan.render())
        return finish(m.FAILED, 2, reason="dataset plan rejected: " + str(exc), resumable=False,
                      plan=exc.plan.to_dict())
    except (ConfigInvalid, CheckpointError) as exc:
        return finish(m.FAILED, 2, reason=str(exc), resumable=False)
    except KeyboardInterrupt:
        finish(m.CANCELLED, 130, step=None, reason="interrupted")
        raise
    except Exception as exc:
        return finish(m.FAILED, 1, reason=f"{type(exc).__name__}: {exc}", resumable=_has_checkpoint(cfg),
                      traceback=traceback.format_exc(limit=20))
    finally:
        emitter.close()


class _NoEvents:
    """Event store of the non-main processes of a multi-process job: the main process reports for all."""

    def append(self, event: Any) -> Any:
        return event

    def close(self) -> None:
        pass


def _follow_the_main_process(cfg: Any, home: Path, registry: Any, job_id: str) -> tuple[int, Any]:
    from simpletuner_core.training.engine import Trainer

    result = Trainer(cfg, job_id=job_id, home=home, emitter=EventEmitter(job_id, _NoEvents()),
                     registry=registry).run()
    return 0, result
