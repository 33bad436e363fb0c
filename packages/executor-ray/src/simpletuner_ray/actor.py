"""The per-node side: a Ray actor that runs one machine's share of a job with a node-local store.

The trainer is the ordinary ``simpletuner_core.jobs.worker`` process (via ``launch_command``), pointed at a
store under the node's own ``SIMPLETUNER_HOME``; the server pulls that store's events by id (its watermark) and
pushes commands into it, so nodes need no access to the server's database. Torch is never imported here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import attrs

from simpletuner_core.jobs import models as m


def job_from_dict(data: dict[str, Any]) -> m.Job:
    fields = {f.name for f in attrs.fields(m.Job)}
    raw = {k: v for k, v in data.items() if k in fields}
    raw["device_ids"] = tuple(raw.get("device_ids") or ())
    raw["allocated_gpus"] = tuple(raw.get("allocated_gpus") or ())
    return m.Job(**raw)


class JobActor:
    """One actor per machine of a job; the rank-0 actor's store is the one whose events the server copies."""

    def __init__(self, job: dict[str, Any], home: str) -> None:
        from simpletuner_core.jobs.store import SQLiteStore

        self.home = Path(home)
        self.job = job_from_dict(job)
        self.store = SQLiteStore(self.home / "state.db")
        self.proc: subprocess.Popen[bytes] | None = None

    def address(self) -> tuple[str, int]:
        """This node's address and a free port for a rendezvous held here (rank 0)."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def start(self, overrides: dict[str, Any]) -> int:
        """Record the job in the node's store and spawn its trainer (``overrides``: this machine's rank, ...)."""
        from simpletuner_core.jobs.runner import launch_command

        job = attrs.evolve(self.job, config={**self.job.config, **overrides}, state=m.STARTING, pid=None)
        try:
            self.store.get_job(job.id)
            self.store.update_job(job.id, **{k: v for k, v in attrs.asdict(job, recurse=False).items() if k != "id"})
        except m.JobError:
            self.store.create_job(job)
        job_dir = self.home / "jobs" / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SIMPLETUNER_HOME": str(self.home), "SIMPLETUNER_PROGRESS": "0"}
        env.pop("SIMPLETUNER_RAY_ADDRESS", None)
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")  # Ray sets it to the GPUs it reserved for this actor
        env["CUDA_VISIBLE_DEVICES"] = gpus if gpus is not None and job.gpus_requested else ""
        with open(job_dir / "trainer.log", "ab") as log:
            self.proc = subprocess.Popen(launch_command(job), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.home))
        self.store.update_job(job.id, pid=self.proc.pid)
        return self.proc.pid

    def poll(self, after_id: int, commands: list[str]) -> dict[str, Any]:
        """Deliver ``commands``; return events after ``after_id`` (local ids), the job record and the exit code."""
        if self.proc is None:  # placed, not started yet (the server is still launching the other ranks)
            return {"events": [], "job": None, "returncode": None, "started": False}
        for command in commands:
            self.store.post_command(self.job.id, command)
        events = [(e.id, e.to_dict()) for e in self.store.read_events(self.job.id, after_id=after_id, limit=500)]
        return {"events": events, "job": self.store.get_job(self.job.id).to_dict(), "returncode": self.proc.poll(),
                "started": True}

    def kill(self) -> None:
        """Kill the trainer's whole process group (torchrun and its ranks): no rank is left waiting on peers."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid
