"""The built-in executor: this machine's GPUs (or its single CPU execution slot), one trainer subprocess a job."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs import queue
from simpletuner_core.jobs.devices import Device
from simpletuner_core.jobs.executors import BaseExecutor, mine
from simpletuner_core.jobs.processes import is_alive, start_time

SPAWN_GRACE_S = 30.0  # a ``starting`` job without a PID yet is being spawned, not dead


class LocalExecutor(BaseExecutor):
    """Trainer processes run in their own session, so they outlive the CLI or server that started them."""

    name = "local"
    remote = False

    def __init__(self, store: Any, home: Path, devices: Sequence[Device]) -> None:
        self.store, self.home, self.devices = store, home, list(devices)
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def place(self, job: m.Job, active: Sequence[m.Job], limits: queue.Limits) -> queue.Decision:
        return queue.decide(job, mine(self.name, active), self.devices, limits)

    def launch(self, job: m.Job) -> m.Job:
        from simpletuner_core.jobs.runner import launch_command

        job_dir = self.home / "jobs" / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SIMPLETUNER_HOME": str(self.home), "SIMPLETUNER_PROGRESS": "0",
               "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in job.allocated_gpus)}
        with open(job_dir / "trainer.log", "ab") as log:
            proc = subprocess.Popen(launch_command(job), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.home))
        self._children[job.id] = proc
        return self.store.update_job(job.id, pid=proc.pid, pid_start_time=start_time(proc.pid),
                                     started_at=time.time())

    def alive(self, job: m.Job) -> bool:
        if job.state == m.STARTING and job.pid is None and time.time() - (job.created_at or 0) < SPAWN_GRACE_S:
            return True
        return is_alive(job.pid, job.pid_start_time)

    def tick(self) -> None:
        """Reap finished children (no zombies in a long-lived server)."""
        for job_id, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[job_id]
