"""The ``worker`` executor: jobs run on remote ``simpletuner worker`` agents that dialled in to this store's
server. All of its state is in the store (:mod:`simpletuner_core.workers.tables`), so any process's runner can
place, dispatch and reconcile worker jobs; the server streams the dispatch to the agent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simpletuner_core.events.types import Event
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs import queue
from simpletuner_core.jobs.executors import BaseExecutor, labels_match
from simpletuner_core.workers import ATTEMPTS_SETTING, IDLE, OFFLINE, OFFLINE_SETTING, setting
from simpletuner_core.workers import datasets as ds
from simpletuner_core.workers import tables as t


def processes(job: m.Job) -> int:
    """GPUs a job needs on a worker: one per trainer process (``num_processes``); a CPU worker runs 1-process jobs."""
    return max(1, int(job.config.get("--num_processes") or 1))


class WorkerExecutor(BaseExecutor):
    name = "worker"
    remote = True

    def __init__(self, store: Any, home: Path) -> None:
        self.store, self.home = store, home

    def place(self, job: m.Job, active: Sequence[m.Job], limits: queue.Limits) -> queue.Decision:
        """The first idle worker (by name) with no active job, the labels and enough GPUs. Reads the store in
        the admission transaction, so two processes admitting at once see the same workers."""
        held = {j.worker_id for j in active if j.worker_id}
        workers = t.listing(self.store)
        if not workers:  # ``auto`` falls back to local without a word; ``worker`` waits for one to register
            if job.target == "auto":
                return queue.Decision(reason="", impossible=True)
            return queue.Decision(reason="waiting for a remote worker: none is registered")
        wanted = processes(job)
        for worker in workers:
            fits = worker.gpu_count >= wanted or (worker.gpu_count == 0 and wanted == 1)
            if worker.status == IDLE and worker.id not in held and fits and labels_match(job.worker_labels,
                                                                                          worker.labels):
                return queue.Decision(fields={"worker_id": worker.id})
        labels = f" with labels {job.worker_labels}" if job.worker_labels else ""
        return queue.Decision(reason=f"waiting for an idle remote worker{labels} offering {wanted} process(es); "
                                     f"{sum(w.status == IDLE and w.id not in held for w in workers)} idle of "
                                     f"{len(workers)}")

    def launch(self, job: m.Job) -> m.Job:
        """Record the run and stream ``job_submit`` to the worker: resolved config, dataloader, file manifests."""
        assert job.worker_id is not None
        dataloader = ds.load_dataloader(job.config)
        datasets = ds.describe(dataloader)
        files = [(f["sha256"], str(Path(d["path"]) / f["path"]), f["size"]) for d in datasets.values()
                 for f in d["files"]]
        with self.store.transaction():
            resume = t.last_checkpoint(self.store, job.id)
            t.start_run(self.store, job.id, job.attempts, job.worker_id, files)
            t.post(self.store, job.worker_id, "job_submit", job_id=job.id, attempt=job.attempts, config=job.config,
                   dataloader=dataloader, datasets=datasets, resume_checkpoint=resume, user=job.user,
                   output_dir=job.output_dir)
            return self.store.update_job(job.id, started_at=time.time())

    def alive(self, job: m.Job) -> bool:
        worker = t.get(self.store, job.worker_id)
        return worker is not None and worker.status != OFFLINE

    def requeue(self, job: m.Job) -> m.Job | None:
        """The job's worker is gone: back to the queue (attempts + 1) while retries remain, with a
        ``job.requeued`` event; None (the runner fails it) past ``worker_max_attempts`` or while stopping."""
        limit = int(setting(self.store, ATTEMPTS_SETTING))
        if job.attempts >= limit or job.state == m.STOPPING:
            return None
        with self.store.transaction():
            moved = self.store.transition(
                job.id, m.ACTIVE_STATES, m.QUEUED, attempts=job.attempts + 1, worker_id=None, executor=None,
                started_at=None, allocated_gpus=(), cpu_slot=False,
                reason=f"requeued: worker {job.worker_id} went offline (attempt {job.attempts + 1} of {limit})")
            if moved is None:
                return None
            checkpoint = t.last_checkpoint(self.store, job.id)
            self.store.append_event(Event(type="job.requeued", job_id=job.id, level="warning", data={
                "worker_id": job.worker_id, "attempt": moved.attempts, "max_attempts": limit,
                "resume_checkpoint": checkpoint, "reason": moved.reason}))
            if t.get(self.store, job.worker_id) is not None:  # if it comes back, it drops the job
                t.post(self.store, job.worker_id, "job_abandon", job_id=job.id, attempt=job.attempts)
        return moved

    def tick(self) -> None:
        t.mark_stale_offline(self.store, float(setting(self.store, OFFLINE_SETTING)))
