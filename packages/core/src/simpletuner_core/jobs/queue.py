"""GPU-aware admission: which queued jobs may start now, decided and recorded in one store transaction.

A job holds either GPUs or the single CPU execution slot. Limits (stored settings, editable at run time):
``local_gpu_max_concurrent`` (GPUs in use at once; None = unlimited), ``local_job_max_concurrent`` (running
jobs; None = unlimited) and ``local_user_max_concurrent`` (running jobs per user; None = unlimited). Queued jobs
are considered by priority (high first), then age; a job that cannot start records why in ``reason``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.devices import Device

if TYPE_CHECKING:
    from simpletuner_core.jobs.executors import Executor

LIMIT_KEYS = ("local_gpu_max_concurrent", "local_job_max_concurrent", "local_user_max_concurrent")


@attrs.frozen
class Limits:
    local_gpu_max_concurrent: int | None = None
    local_job_max_concurrent: int | None = None
    local_user_max_concurrent: int | None = None


def load_limits(store: Any) -> Limits:
    return Limits(**{key: store.get_setting(key) for key in LIMIT_KEYS})


def limit_error(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be limit ``key`` (None when it can), so callers can name the field."""
    if key not in LIMIT_KEYS:
        return f"unknown limit {key!r} (known: {', '.join(LIMIT_KEYS)})"
    low = 0 if key == "local_gpu_max_concurrent" else 1
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        return f"{key} must be an integer >= {low} or null, got {value!r}"
    return None


def set_limits(store: Any, **values: Any) -> Limits:
    """Validate and store limits; unknown names or values below their minimum raise ValueError."""
    for key, value in values.items():
        problem = limit_error(key, value)
        if problem is not None:
            raise ValueError(problem)
    with store.transaction():
        for key, value in values.items():
            store.set_setting(key, value)
    return load_limits(store)


@attrs.frozen
class Decision:
    gpus: tuple[int, ...] = ()
    cpu_slot: bool = False
    reason: str | None = None  # None: the job can start now
    impossible: bool = False  # it can never start on this machine
    executor: str | None = None  # who takes it (set by executors.place)
    fields: dict[str, Any] = attrs.field(factory=dict)  # extra job fields the executor records (worker_id, ...)

    @property
    def ok(self) -> bool:
        return self.reason is None


def decide(job: m.Job, active: Sequence[m.Job], devices: Sequence[Device], limits: Limits) -> Decision:
    """Can ``job`` start next to the ``active`` ones? Pure: no store access."""
    if limits.local_job_max_concurrent is not None and len(active) >= limits.local_job_max_concurrent:
        return Decision(reason=f"waiting: {len(active)} job(s) running, local_job_max_concurrent="
                               f"{limits.local_job_max_concurrent}")
    if job.user is not None and limits.local_user_max_concurrent is not None:
        mine = sum(1 for a in active if a.user == job.user)
        if mine >= limits.local_user_max_concurrent:
            return Decision(reason=f"waiting: user {job.user!r} has {mine} job(s) running, "
                                   f"local_user_max_concurrent={limits.local_user_max_concurrent}")
    if job.gpus_requested == 0 and not job.device_ids:
        holder = next((a for a in active if a.cpu_slot), None)
        if holder is not None:
            return Decision(reason=f"waiting for the CPU execution slot (held by job {holder.id})")
        return Decision(cpu_slot=True)
    known = {d.index for d in devices}
    wanted = len(job.device_ids) if job.device_ids and not job.any_gpu else job.gpus_requested
    if wanted > len(known):
        return Decision(reason=f"asks for {wanted} GPU(s); this machine offers {len(known)}", impossible=True)
    missing = sorted(set(job.device_ids) - known) if job.device_ids and not job.any_gpu else []
    if missing:
        return Decision(reason=f"asks for GPU(s) {missing}, which this machine does not offer "
                               f"(available: {sorted(known)}); use any_gpu to take any free GPUs", impossible=True)
    in_use = {g for a in active for g in a.allocated_gpus}
    cap = limits.local_gpu_max_concurrent
    if cap is not None and len(in_use) + wanted > cap:
        return Decision(reason=f"waiting: {len(in_use)} GPU(s) in use, local_gpu_max_concurrent={cap}",
                        impossible=wanted > cap)
    if job.device_ids and not job.any_gpu:
        busy = sorted(set(job.device_ids) & in_use)
        if busy:
            return Decision(reason=f"waiting for GPU(s) {busy} (in use)")
        return Decision(gpus=tuple(sorted(job.device_ids)))
    free = sorted(known - in_use)
    if len(free) < wanted:
        return Decision(reason=f"waiting for {wanted} free GPU(s); {len(free)} free")
    return Decision(gpus=tuple(free[:wanted]))


def queued_in_order(store: Any) -> list[m.Job]:
    return sorted(store.list_jobs(states=[m.QUEUED]), key=lambda j: (-j.priority, j.created_at, j.id))


def admit(store: Any, executors: Mapping[str, Executor], only: str | None = None) -> list[m.Job]:
    """Move every queued job that fits somewhere to ``starting`` (with its allocation); return them. One transaction."""
    from simpletuner_core.jobs.executors import place

    started: list[m.Job] = []
    with store.transaction():
        limits = load_limits(store)
        active = store.list_jobs(states=m.ACTIVE_STATES)
        for job in queued_in_order(store):
            if only is not None and job.id != only:
                continue
            decision = place(job, active, executors, limits)
            if decision.ok:
                moved = store.transition(job.id, [m.QUEUED], m.STARTING, allocated_gpus=decision.gpus,
                                         cpu_slot=decision.cpu_slot, reason=None, executor=decision.executor,
                                         **decision.fields)
                if moved is not None:
                    started.append(moved)
                    active.append(moved)
            elif decision.reason != job.reason:
                store.update_job(job.id, reason=decision.reason)
    return started
