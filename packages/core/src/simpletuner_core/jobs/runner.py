"""The job runner: submit, admit (queue.py), spawn one trainer process per job, command, reconcile.

Trainer processes run in their own session, so they outlive the process that started them (the CLI, or a server
that restarts). Whoever changes the queue — a submit, a trainer finishing, a server tick — calls :meth:`kick`, so
CPU-only and CLI-only setups need no daemon. PID plus process start time identify a trainer: a reused PID is
never mistaken for it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from simpletuner_core import paths
from simpletuner_core.jobs import executors as ex
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs import queue
from simpletuner_core.jobs.devices import Device, discover
from simpletuner_core.jobs.executors.local import LocalExecutor

COMMANDS = ("stop", "cancel", "validate", "checkpoint")
DEVICES_SETTING = "runner_devices"


@attrs.frozen
class SubmitResult:
    success: bool
    status: str  # running | queued | rejected
    job_id: str | None = None
    allocated_gpus: tuple[int, ...] = ()
    queue_position: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["allocated_gpus"] = list(self.allocated_gpus)
        return data


def launch_command(job: m.Job, python: str = sys.executable) -> list[str]:
    """argv of the trainer: one process, or ``num_processes`` of them through torchrun / ``accelerate launch``.

    With ``num_machines`` > 1 this is one machine's share of a multi-node job: ``num_processes`` here, rank
    ``machine_rank``, meeting the others at ``main_process_ip:main_process_port`` (each machine runs the job).
    """
    worker = ["-m", "simpletuner_core.jobs.worker", job.id]
    config = job.config
    processes = int(config.get("--num_processes") or 1)
    machines = int(config.get("--num_machines") or 1)
    if processes <= 1 and machines <= 1:
        return [python, *worker]
    nodes: list[str] = []
    accelerate_config = config.get("--accelerate_config")
    if machines > 1:
        rank = str(int(config.get("--machine_rank") or 0))
        ip = str(config.get("--main_process_ip") or "127.0.0.1")
        port = str(int(config.get("--main_process_port") or 29500))
        nodes = (["--num_machines", str(machines), "--machine_rank", rank, "--main_process_ip", ip,
                  "--main_process_port", port] if accelerate_config else
                 ["--nnodes", str(machines), "--node_rank", rank, "--master_addr", ip, "--master_port", port])
    if accelerate_config:  # accelerate counts processes over all machines
        return [python, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
                "--num_processes", str(processes * machines), *nodes, *worker]
    single = ["--standalone"] if machines <= 1 else []
    return [python, "-m", "torch.distributed.run", *single, *nodes, "--nproc_per_node", str(processes), *worker]


class Runner:
    def __init__(self, store: Any, home: Path | None = None, devices: Sequence[Device] | None = None,
                 registry: Any | None = None) -> None:
        self.store = store
        self.home = Path(home) if home else paths.home()
        if devices is not None:  # an explicit inventory is shared with the trainers, which kick the queue too
            self.devices = list(devices)
            store.set_setting(DEVICES_SETTING, [attrs.asdict(d) for d in self.devices])
        else:
            saved = store.get_setting(DEVICES_SETTING)
            self.devices = [Device(**d) for d in saved] if saved is not None else discover()[0]
        self._registry = registry
        self._executors: dict[str, ex.Executor] | None = None

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from simpletuner_core.plugins import get_registry

            self._registry = get_registry()
        return self._registry

    @property
    def executors(self) -> Mapping[str, ex.Executor]:
        """Every executor enabled in this process, built once from the ``register_executors`` specs."""
        if self._executors is None:
            built: dict[str, ex.Executor] = {}
            for spec in self.registry.executors.values():
                executor = spec.factory(self)
                if executor is not None:
                    built[spec.name] = executor
            if "local" not in built:  # a registry without core's builtins (a narrowed test plugin manager)
                built["local"] = LocalExecutor(self.store, self.home, self.devices)
            self._executors = built
        return self._executors

    # -- submission -----------------------------------------------------------------------------------------
    def resolve(self, env: str | None = None, config: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Validated config from an environment (plus overrides in ``config``) or from ``config`` alone."""
        cfg, wire, _ = self._resolve(env, config)
        return cfg, wire

    def _resolve(self, env: str | None, config: dict[str, Any] | None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(config, its wire form, the bare keys as given: SimpleTuner-only keys are dropped from the wire form)."""
        from simpletuner_core.config import validate
        from simpletuner_core.config.environments import load_environment
        from simpletuner_core.config.migrations import overlay
        from simpletuner_core.config.model import strip_dashes, unstructure

        raw: dict[str, Any] = {}
        if env is not None:
            raw.update(strip_dashes(load_environment(env, self.home)["config"]))
        raw = overlay(raw, strip_dashes(config or {}))
        cfg = validate(raw, self.registry)
        return cfg, {f"--{k}": v for k, v in unstructure(cfg).items()}, raw

    def submit(self, *, env: str | None = None, config: dict[str, Any] | None = None, user: str | None = None,
               priority: int = 0, gpus: int | None = None, device_ids: Sequence[int] = (), any_gpu: bool = False,
               no_wait: bool = False, target: str | None = None,
               worker_labels: Mapping[str, str] | None = None, job_id: str | None = None) -> SubmitResult:
        """Queue a job and start it at once when resources allow (``no_wait``: reject instead of queueing).

        ``target`` / ``worker_labels`` choose the executor (see :mod:`simpletuner_core.jobs.executors`); bad
        values raise ValueError naming the field, before anything is stored. ``job_id``: keep an id given
        elsewhere (a worker agent runs a dispatched job under the orchestrator's id).
        """
        from simpletuner_core.config.rules import inert_notes

        target, labels = ex.check_target(target, worker_labels, list(self.executors))
        cfg, wire, raw = self._resolve(env, config)
        wanted = self._gpus_wanted(cfg, gpus, device_ids)
        job = m.Job(id=job_id or m.new_job_id(), config=wire, env=env, user=user, priority=priority, gpus_requested=wanted,
                    device_ids=tuple(device_ids), any_gpu=any_gpu, created_at=time.time(),
                    output_dir=wire.get("--output_dir"), target=target, worker_labels=labels)
        with self.store.transaction():
            verdict = ex.place(job, self.store.list_jobs(states=m.ACTIVE_STATES), self.executors,
                               queue.load_limits(self.store))
            if verdict.impossible or (no_wait and not verdict.ok):
                return SubmitResult(False, "rejected", reason=verdict.reason)
            self.store.create_job(job)
            self.store.append_event(_event(job.id, "job.queued", priority=priority, gpus_requested=wanted))
            for note in inert_notes(cfg, raw):  # the trainer sees only the structured config: say it here
                self.store.append_event(_event(job.id, "log", level="warning", message=note))
        started = queue.admit(self.store, self.executors, only=job.id if no_wait else None)
        mine = next((j for j in started if j.id == job.id), None)
        for other in started:
            self.start(other)
        if mine is not None:
            return SubmitResult(True, "running", job.id, mine.allocated_gpus)
        current = self.store.get_job(job.id)
        return SubmitResult(True, "queued", job.id, queue_position=self.store.queue_position(job.id),
                            reason=current.reason)

    def dry_run(self, *, env: str | None = None, config: dict[str, Any] | None = None, gpus: int | None = None,
                device_ids: Sequence[int] = (), any_gpu: bool = False, target: str | None = None,
                worker_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """What submit would do: the decision, queue position, resolved config and the dataset plan."""
        from simpletuner_core.training.engine import plan_only

        target, labels = ex.check_target(target, worker_labels, list(self.executors))
        cfg, wire = self.resolve(env, config)
        wanted = self._gpus_wanted(cfg, gpus, device_ids)
        probe = m.Job(id="dry-run", config=wire, gpus_requested=wanted, device_ids=tuple(device_ids),
                      any_gpu=any_gpu, target=target, worker_labels=labels)
        verdict = ex.place(probe, self.store.list_jobs(states=m.ACTIVE_STATES), self.executors,
                           queue.load_limits(self.store))
        plan = plan_only(cfg, self.home, self.registry)
        return {"would": "start" if verdict.ok else ("reject" if verdict.impossible else "queue"),
                "executor": verdict.executor, "allocated_gpus": list(verdict.gpus), "cpu_slot": verdict.cpu_slot,
                "reason": verdict.reason,
                "queue_position": None if verdict.ok else len(queue.queued_in_order(self.store)) + 1,
                "config": wire, "plan": plan.to_dict(), "plan_text": plan.render()}

    def _gpus_wanted(self, cfg: Any, gpus: int | None, device_ids: Sequence[int]) -> int:
        """Explicit ids, else an explicit count, else one GPU per trainer process (none on a CPU-only machine)."""
        if device_ids:
            return len(device_ids)
        if gpus is not None:
            return gpus
        return cfg.num_processes if self.devices else 0

    # -- processes ------------------------------------------------------------------------------------------
    def start(self, job: m.Job) -> m.Job:
        """Hand a ``starting`` job to the executor that placed it (the local one spawns its trainer)."""
        return self.executors[job.executor or "local"].launch(job)

    def kick(self) -> list[m.Job]:
        """Executors' housekeeping, reconcile, then start every queued job that now fits."""
        self.reap()
        self.reconcile()
        return [self.start(job) for job in queue.admit(self.store, self.executors)]

    def reap(self) -> None:
        for executor in self.executors.values():
            executor.tick()

    def reconcile(self) -> list[m.Job]:
        """Active jobs whose executor says they are no longer run become failed.

        Jobs of an executor not enabled in this process (a cluster the CLI is not connected to) are left alone.
        """
        self.reap()
        fixed = []
        for job in self.store.list_jobs(states=m.ACTIVE_STATES):
            executor = self.executors.get(job.executor or "local")
            if executor is None or executor.alive(job):
                continue
            requeue = getattr(executor, "requeue", None)  # optional: remote executors may retry elsewhere
            if requeue is not None and requeue(job) is not None:
                continue
            reason = (f"trainer process {job.pid} is gone (killed or crashed) while the job was {job.state}; "
                      "resume it with resume_from_checkpoint=latest") if not executor.remote else (
                      f"the {executor.name} executor lost the job while it was {job.state}; "
                      "resume it with resume_from_checkpoint=latest")
            moved = self.store.transition(job.id, m.ACTIVE_STATES, m.FAILED, reason=reason, resumable=True,
                                          finished_at=time.time())
            if moved is not None:
                self.store.append_event(_event(job.id, "job.failed", level="error", reason=reason,
                                               resumable=True))
                fixed.append(moved)
        return fixed

    # -- commands -------------------------------------------------------------------------------------------
    def command(self, job_id: str, command: str) -> m.Job:
        """stop/cancel (idempotent), validate/checkpoint (running jobs only); clear errors otherwise."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
        job = self.store.get_job(job_id)
        if job.state == m.QUEUED and command in ("stop", "cancel"):
            moved = self.store.transition(job_id, [m.QUEUED], m.CANCELLED, finished_at=time.time(),
                                          reason=f"{command} while queued")
            if moved is not None:
                self.store.append_event(_event(job_id, "job.cancelled", step=None, reason=moved.reason))
                return moved
            job = self.store.get_job(job_id)
        if job.state == m.STOPPING and command == "stop":
            return job
        if job.state == m.CANCELLED and command == "cancel":
            return job
        if job.state not in (m.RUNNING, m.STARTING, m.STOPPING):
            raise m.JobError(f"job {job_id} is {job.state}; {command} applies to running jobs only")
        self.store.post_command(job_id, command)
        if command == "stop":
            return self.store.transition(job_id, [m.RUNNING, m.STARTING], m.STOPPING) or self.store.get_job(job_id)
        return job


def _event(job_id: str, kind: str, level: str = "info", **data: Any) -> Any:
    from simpletuner_core.events.types import Event

    return Event(type=kind, job_id=job_id, data=data, level=level)
