"""The agent's loop: register, follow the dispatch stream, run each job locally, forward its events.

Threads: the main one follows the stream (and reconnects with backoff); a heartbeat thread; one thread per
running job that forwards its events in order and then its final state. Every call that fails because the
orchestrator is away is retried; nothing is lost meanwhile, since events wait in the local store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import simpletuner_core
from simpletuner_core.agent import data
from simpletuner_core.agent.capabilities import capabilities
from simpletuner_core.agent.client import HttpError, Message, Orchestrator
from simpletuner_core.events.types import Event
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import open_store

BATCH = 500
NOT_FORWARDED = frozenset({"job.queued"})  # the orchestrator queued the job itself
MAX_BACKOFF = 30.0


class Gone(Exception):
    """The orchestrator no longer gives this job to us (requeued elsewhere): drop it."""


class Agent:
    def __init__(self, client: Orchestrator, home: Path, name: str | None = None, persistent: bool = False,
                 upload_outputs: bool = False, shared_storage: bool = True, heartbeat: float | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.client, self.home, self.name, self.persistent = client, home, name, persistent
        self.upload_outputs, self.shared_storage, self.heartbeat_override = upload_outputs, shared_storage, heartbeat
        self.say = say
        self.store = open_store(home)
        self.runner = Runner(self.store, home)
        self._mark_key = f"agent_last_message:{client.url}"
        self.last_message = int(self.store.get_setting(self._mark_key) or 0)
        self.current: dict[str, Any] | None = None  # {"job_id", "attempt", "local_id", "thread", "gone"}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.reregister = threading.Event()
        self.draining = False
        self.heartbeat_interval = 30.0

    # -- calls to the orchestrator, retried while it is away --

    def _retry(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        delay = 0.5
        while True:
            try:
                return self.client.call(method, path, body)
            except HttpError as exc:
                if exc.status in (403, 409):
                    raise Gone(exc.message) from None
                if exc.status < 500 and exc.status != 429:
                    raise
            except OSError as exc:
                self.say(f"orchestrator unreachable ({exc}); retrying in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def register(self) -> dict[str, Any]:
        with self.lock:
            current = self.current["job_id"] if self.current else None
        body = {**capabilities(), "name": self.name, "persistent": self.persistent, "current_job_id": current,
                "agent_version": simpletuner_core.__version__}
        answer = self.client.call("POST", "/api/workers/register", body)
        self.heartbeat_interval = self.heartbeat_override or float(answer.get("heartbeat_interval") or 30.0)
        if answer.get("abandon_job") and current == answer["abandon_job"]:
            self._drop_current("the orchestrator gave the job to another worker")
        if not self.last_message:  # a fresh agent: only what is dispatched from now on
            self.last_message = int(answer.get("last_message_id") or 0)
        self.say(f"registered as {answer['worker_id']} ({body['accelerator_type']}, {body['gpu_count']} GPU(s))")
        return answer

    # -- the main loop --

    def _cancel_leftovers(self) -> None:
        """Jobs a previous run of this agent left active: nobody reports them (the orchestrator requeues them
        when this agent registers without them), so their trainers must not hold this machine."""
        self.runner.reconcile()  # those whose trainer died with the agent become failed
        for job in self.store.list_jobs(states=(m.QUEUED, *m.ACTIVE_STATES)):
            try:
                self.runner.command(job.id, "cancel")
                self.say(f"cancelled job {job.id} left over from a previous run of this agent")
            except (m.JobError, ValueError):
                pass

    def run(self) -> int:
        self._cancel_leftovers()
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        delay = 1.0
        while not self.done.is_set():
            try:
                answer = self.register()
                if not beat.is_alive():
                    beat.start()
                delay = 1.0
                self.reregister.clear()
                self._follow(answer)
            except HttpError as exc:
                if exc.status == 401:
                    self.say(f"the orchestrator refused the token ({exc.message}); exiting")
                    return 3
                self.say(f"orchestrator error {exc}; reconnecting in {delay:.0f}s")
            except (OSError, ValueError) as exc:
                self.say(f"connection lost ({type(exc).__name__}: {exc}); reconnecting in {delay:.0f}s")
            if self.done.wait(delay if not self.done.is_set() else 0):
                break
            delay = min(delay * 2, MAX_BACKOFF)
        self._wait_for_job()
        try:
            self.client.call("POST", "/api/workers/disconnect", {})
        except (HttpError, OSError):
            pass
        self.say("disconnected")
        return 0

    def _follow(self, answer: dict[str, Any]) -> None:
        timeout = max(10.0, 3 * min(15.0, self.heartbeat_interval))
        for message in self.client.stream(answer.get("sse_url") or "/api/workers/stream", self.last_message,
                                          timeout):
            if self.done.is_set() or self.reregister.is_set():
                return
            if message is None or message.id <= self.last_message:
                continue
            self._handle(message)
            self.last_message = message.id
            self.store.set_setting(self._mark_key, message.id)

    def _handle(self, message: Message) -> None:
        kind, d = message.type, message.data
        with self.lock:
            current = self.current
        mine = current is not None and current["job_id"] == d.get("job_id") and current["attempt"] == d.get("attempt")
        if kind == "job_submit":
            if current is not None:
                if not mine:
                    self.say(f"ignoring job {d['job_id']}: busy with {current['job_id']}")
                return
            self._start(d)
        elif kind == "job_command" and mine:
            self._command(current, d["command"])
        elif kind == "job_abandon" and mine:
            self._drop_current("requeued on the orchestrator")
        elif kind == "drain":
            self.draining = True
            self.say("draining: finishing the current job, then exiting")
            if current is None:
                self.done.set()

    def _heartbeats(self) -> None:
        while not self.done.wait(self.heartbeat_interval):
            with self.lock:
                current = self.current["job_id"] if self.current else None
            try:
                answer = self.client.call("POST", "/api/workers/heartbeat", {"current_job_id": current})
                if answer.get("reregister"):
                    self.reregister.set()
            except (HttpError, OSError):
                pass  # the stream loop reconnects; a missed beat is only a late one

    def shutdown(self) -> None:
        """Stop now: cancel the local job (its trainer runs in its own session) and disconnect."""
        self.done.set()
        self._drop_current("the agent is shutting down")
        try:
            self.client.call("POST", "/api/workers/disconnect", {})
        except (HttpError, OSError):
            pass

    def _wait_for_job(self) -> None:
        with self.lock:
            thread = self.current["thread"] if self.current else None
        if thread is not None:
            thread.join()

    # -- one job --

    def _start(self, dispatch: dict[str, Any]) -> None:
        job_id = dispatch["job_id"]
        local_id = job_id
        try:
            self.store.get_job(job_id)
            local_id = f"{job_id}-r{dispatch['attempt']}"  # this agent ran an earlier attempt of the job
        except m.JobError:
            pass
        current = {"job_id": job_id, "attempt": dispatch["attempt"], "local_id": local_id, "gone": False,
                   "pending": [], "submitted": False}
        current["thread"] = threading.Thread(target=self._run_job, args=(current, dispatch), name=f"job-{job_id}",
                                             daemon=True)
        with self.lock:
            self.current = current
        self.say(f"job {job_id} (attempt {dispatch['attempt']}) dispatched")
        current["thread"].start()

    def _command(self, current: dict[str, Any], command: str) -> None:
        if not current["submitted"]:
            current["pending"].append(command)
            return
        try:
            self.runner.command(current["local_id"], command)
        except (m.JobError, ValueError) as exc:
            self.say(f"command {command} not applied: {exc}")

    def _drop_current(self, why: str) -> None:
        with self.lock:
            current = self.current
        if current is None:
            return
        current["gone"] = True
        self.say(f"dropping job {current['job_id']}: {why}")
        if current["submitted"]:
            try:
                self.runner.command(current["local_id"], "cancel")
            except (m.JobError, ValueError):
                pass

    def _status(self, current: dict[str, Any], state: str, **extra: Any) -> None:
        self._retry("POST", f"/api/workers/job/{current['job_id']}/status",
                    {"state": state, "attempt": current["attempt"], **extra})

    def _run_job(self, current: dict[str, Any], dispatch: dict[str, Any]) -> None:
        try:
            self._run_job_inner(current, dispatch)
        except Gone as exc:
            current["gone"] = True
            self.say(f"job {current['job_id']} is no longer ours ({exc})")
            if current["submitted"]:
                try:
                    self.runner.command(current["local_id"], "cancel")
                except (m.JobError, ValueError):
                    pass
        except Exception as exc:  # report it rather than leave the job hanging on the orchestrator
            self.say(f"job {current['job_id']} failed on this worker: {type(exc).__name__}: {exc}")
            try:
                self._status(current, m.FAILED, reason=f"worker agent: {type(exc).__name__}: {exc}")
            except Exception:
                pass
        finally:
            self.store.close()
            with self.lock:
                self.current = None
            if not self.persistent or self.draining:
                self.done.set()

    def _run_job_inner(self, current: dict[str, Any], dispatch: dict[str, Any]) -> None:
        local_id = current["local_id"]
        config, stats = data.prepare(dispatch, self.home, self.client, local_id, self.shared_storage)
        result = self.runner.submit(config=config, target="local", job_id=local_id, user=dispatch.get("user"))
        if not result.success:
            self._status(current, m.FAILED, reason=f"the worker cannot run it: {result.reason}")
            return
        self.store.append_event(Event(type="worker.data", job_id=local_id, data={
            "message": f"{stats['in_place']} file(s) used in place, {stats['fetched_files']} fetched "
                       f"({stats['fetched_bytes']} bytes), {stats['cached_files']} from the cache", **stats}))
        current["submitted"] = True
        for command in current.pop("pending"):
            self._command(current, command)
        self._forward(current)
        if current["gone"]:
            return
        job = self.store.get_job(local_id)
        output_dir = Path(job.output_dir or config["--output_dir"])
        files = data.outputs(output_dir)
        if self.upload_outputs and job.state == m.COMPLETED:
            self._upload(current, output_dir, files)
        self._status(current, job.state, reason=job.reason, resumable=job.resumable, outputs=files,
                     output_dir=str(output_dir))
        self.say(f"job {current['job_id']} {job.state}")

    def _forward(self, current: dict[str, Any]) -> None:
        """Local events in id order, batched; the orchestrator's ``acked`` watermark says what is stored."""
        local_id, acked, running, last_reconcile = current["local_id"], 0, False, 0.0
        while not current["gone"]:
            job = self.store.get_job(local_id)  # state first: events written before a final state are read after
            if time.monotonic() - last_reconcile > 2.0:  # a killed trainer fails the local job
                self.runner.reconcile()
                last_reconcile = time.monotonic()
            if not running and job.state in (m.RUNNING, m.STOPPING, *m.FINAL_STATES):
                self._status(current, m.RUNNING)
                running = True
            events = self.store.read_events(local_id, after_id=acked, limit=BATCH)
            batch = [{"seq": e.id, "type": e.type, "level": e.level, "timestamp": e.timestamp,
                      "version": e.version, "data": e.data} for e in events if e.type not in NOT_FORWARDED]
            if batch:
                answer = self._retry("POST", f"/api/workers/job/{current['job_id']}/events",
                                     {"attempt": current["attempt"], "events": batch})
                acked = max(acked, int(answer.get("acked") or 0))
            if events:
                acked = max(acked, events[-1].id) if not batch or acked >= batch[-1]["seq"] else acked
                continue
            if job.state in m.FINAL_STATES:
                return
            self.store.wait_events(local_id, acked, 0.5)

    def _upload(self, current: dict[str, Any], output_dir: Path, files: list[dict[str, Any]]) -> None:
        """``--worker_upload_outputs``: the final weights (not the checkpoints) into the orchestrator's dir."""
        for item in files:
            if item["path"].split("/")[0].startswith("checkpoint"):
                continue
            from urllib.parse import quote

            self.client.upload(f"/api/workers/job/{current['job_id']}/outputs?path={quote(item['path'])}",
                               output_dir / item["path"])
