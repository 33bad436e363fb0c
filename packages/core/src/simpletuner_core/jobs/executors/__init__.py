"""Executors: where a job's trainer runs. The runner admits, starts and reconciles jobs through them.

``local`` (this machine's GPUs or its CPU slot, a trainer subprocess) is core's own; remote workers and clusters
arrive as plugins through ``register_executors``. All of them share the store as the job record, event log and
command channel, so a job's events, commands and final state look the same wherever it ran.

A job's ``target`` picks the candidates: ``local``; ``worker`` (every remote executor, in registration order);
``auto`` (remote executors first, then local); or one executor by name. The first candidate whose
:meth:`Executor.place` says yes takes the job; its answer's ``fields`` (a worker id, say) are recorded with the
job's move to ``starting`` in the same store transaction as the decision, so two processes admitting at once
never double-book.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.queue import Decision, Limits


@runtime_checkable
class Executor(Protocol):
    """What the runner needs from a place that runs jobs. Methods are called with the store available."""

    name: str
    remote: bool

    def place(self, job: m.Job, active: Sequence[m.Job], limits: Limits) -> Decision:
        """Can ``job`` start here now, next to every ``active`` job (all executors' — filter your own)? Pure."""
        ...

    def launch(self, job: m.Job) -> m.Job:
        """Start a job this executor placed (it is ``starting``); return the updated record."""
        ...

    def alive(self, job: m.Job) -> bool:
        """Is this active job of ours still being run? False makes the runner fail (or requeue) it."""
        ...

    def tick(self) -> None:
        """Periodic housekeeping (heartbeat timeouts, cluster state); called by every :meth:`Runner.kick`."""
        ...

    # Optional: ``requeue(job) -> Job | None``. When ``alive`` is False the runner calls it first; a Job back
    # in the queue (the worker executor's retry on another worker) is not failed.


class BaseExecutor:
    """Defaults for the optional parts of :class:`Executor`."""

    name = "base"
    remote = True

    def tick(self) -> None:
        return None


_ENABLED: dict[str, dict[str, Any]] = {}


def enable(name: str, **options: Any) -> None:
    """Turn an opt-in executor on in this process only (the server does, from its command line).

    Process-local on purpose: trainer and CLI processes inherit the server's environment, and must not open a
    cluster connection of their own when they kick the queue.
    """
    _ENABLED[name] = dict(options)


def disable(name: str) -> None:
    _ENABLED.pop(name, None)


def options(name: str) -> dict[str, Any] | None:
    """The options ``name`` was enabled with in this process, or None when it is not enabled here."""
    found = _ENABLED.get(name)
    return None if found is None else dict(found)


def listed_workers(executors: Mapping[str, Executor]) -> list[dict[str, Any]]:
    """Every worker the executors can list (their optional ``workers()``), for the admin workers view."""
    return [w for executor in executors.values() if callable(getattr(executor, "workers", None))
            for w in executor.workers()]


def mine(executor: str, active: Sequence[m.Job]) -> list[m.Job]:
    """The active jobs that ``executor`` holds (jobs admitted before executors existed are local)."""
    return [job for job in active if (job.executor or "local") == executor]


def candidates(job: m.Job, executors: Mapping[str, Executor]) -> list[Executor]:
    """Executors that may take ``job``, in the order they are tried (see the module docstring)."""
    remote = [ex for ex in executors.values() if ex.remote]
    local = [ex for ex in executors.values() if not ex.remote]
    if job.target == "local":
        return local
    if job.target == "worker":
        return remote
    if job.target == "auto":
        return [*remote, *local]
    found = executors.get(job.target)
    return [found] if found is not None else []


def place(job: m.Job, active: Sequence[m.Job], executors: Mapping[str, Executor], limits: Limits) -> Decision:
    """The first yes among the candidates (with ``executor`` set), else why not: every candidate's reason."""
    tried = candidates(job, executors)
    if not tried:
        what = "remote worker" if job.target == "worker" else f"executor {job.target!r}"
        return Decision(reason=f"waiting for a {what}: none is available to this server")
    answers: list[tuple[Executor, Decision]] = []
    for executor in tried:
        decision = executor.place(job, active, limits)
        if decision.ok:
            return Decision(gpus=decision.gpus, cpu_slot=decision.cpu_slot, executor=executor.name,
                            fields=decision.fields)
        answers.append((executor, decision))
    said = [(ex, d) for ex, d in answers if d.reason]  # an empty reason: "no, and nothing worth saying"
    reasons = [d.reason for _, d in said] if len(said) == 1 else [f"{ex.name}: {d.reason}" for ex, d in said]
    return Decision(reason="; ".join(r for r in reasons if r), impossible=all(d.impossible for _, d in answers))


def check_target(target: Any, worker_labels: Any, known: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Validate a submission's ``target`` / ``worker_labels``; ValueError names the field and the choices."""
    target = "auto" if target is None else target
    choices = sorted({*m.TARGETS, *known})
    if not isinstance(target, str) or target not in choices:
        raise ValueError(f"target: must be one of {', '.join(choices)}; got {target!r}")
    labels = {} if worker_labels is None else worker_labels
    if not isinstance(labels, dict) or not all(isinstance(k, str) and k and isinstance(v, str)
                                               for k, v in labels.items()):
        raise ValueError(f"worker_labels: must be an object of label name -> glob string; got {worker_labels!r}")
    if labels and target == "local":
        raise ValueError("worker_labels: apply to remote workers only, but target is 'local'")
    return target, dict(labels)


def labels_match(wanted: Mapping[str, str], labels: Mapping[str, Any]) -> bool:
    """Every wanted label is present and matches its glob (``*`` any run, ``?`` one character; case-sensitive)."""
    return all(key in labels and fnmatch.fnmatchcase(str(labels[key]), pattern) for key, pattern in wanted.items())
