"""The ``ray`` executor: place jobs on matching Ray nodes, run them in per-node actors, mirror them back.

Placement reserves each job's CPUs/GPUs as Ray resources on the node it names (node affinity, the glob match
done here), so Ray's scheduler and this queue agree on what is busy. A job with ``num_machines`` > 1 gets a
STRICT_SPREAD placement group (one bundle a machine, all or nothing) and one actor a bundle; rank 0's node
holds the rendezvous. Every sync copies rank 0's new events into this server's store with the watermark in
the same transaction (exactly once, in order), pushes pending commands, and mirrors the job's state. Any rank
exiting early, or an actor or node lost, kills every rank and releases the group: the job fails resumable.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from simpletuner_core.events.types import Event
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs import queue
from simpletuner_core.jobs.executors import BaseExecutor, mine
from simpletuner_ray import NAMESPACE, nodes

log = logging.getLogger(__name__)
SYNC_EVERY_S = 0.5
CALL_TIMEOUT_S = 30.0
MIRRORED = ("reason", "resumable", "started_at", "finished_at")


def state_key(job_id: str) -> str:
    return f"ray.job.{job_id}"


class RayExecutor(BaseExecutor):
    name = "ray"
    remote = True

    def __init__(self, store: Any, address: str, node_home: str | None = None,
                 on_change: Any = None) -> None:
        self.store, self.address = store, address
        self.node_home = (node_home or os.environ.get("SIMPLETUNER_RAY_NODE_HOME")
                          or str(Path(tempfile.gettempdir()) / "simpletuner-ray"))
        self.on_change = on_change
        self._lock = threading.Lock()
        self._connected = False
        self._lost: dict[str, str] = {}
        self._launching: set[str] = set()
        self._thread: threading.Thread | None = None

    # -- connection ---------------------------------------------------------------------------------------
    def ray(self) -> Any:
        import ray

        if not self._connected:
            if not ray.is_initialized():
                ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False,
                         logging_level="warning", configure_logging=False)
            self._connected = True
            self._thread = threading.Thread(target=self._loop, name="ray-sync", daemon=True)
            self._thread.start()
        return ray

    def _loop(self) -> None:
        while True:
            time.sleep(SYNC_EVERY_S)
            try:
                if self.sync() and self.on_change is not None:
                    self.on_change()
            except Exception:  # a transient GCS error must not end the loop
                time.sleep(SYNC_EVERY_S)

    def cluster_nodes(self) -> list[dict[str, Any]]:
        return list(self.ray().nodes())

    # -- the Executor protocol ---------------------------------------------------------------------------------
    def place(self, job: m.Job, active: Sequence[m.Job], limits: queue.Limits) -> queue.Decision:
        machines, cpus, gpus = nodes.per_machine(job)
        fit = nodes.matching(self.cluster_nodes(), job.worker_labels)
        if not fit:
            return queue.Decision(reason=f"waiting for a Ray node matching worker_labels {job.worker_labels}")
        used: dict[str, list[float]] = {}
        for other in mine(self.name, active):
            info = self.store.get_setting(state_key(other.id)) or {}
            _, c, g = nodes.per_machine(other)
            for node_id in info.get("nodes") or [other.worker_id]:
                slot = used.setdefault(str(node_id), [0.0, 0.0])
                slot[0], slot[1] = slot[0] + c, slot[1] + g
        big = [n for n in fit if n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus]
        if len(big) < machines:
            return queue.Decision(reason=f"waiting for {machines} Ray node(s) with {cpus:g} CPU(s) and {gpus:g} "
                                         f"GPU(s) matching {job.worker_labels}; {len(big)} of the {len(fit)} "
                                         "matching node(s) are that large")
        free = [n for n in big
                if n["Resources"].get("CPU", 0) - used.get(n["NodeID"], [0, 0])[0] >= cpus
                and n["Resources"].get("GPU", 0) - used.get(n["NodeID"], [0, 0])[1] >= gpus]
        if len(free) < machines:
            return queue.Decision(reason=f"waiting for {machines} Ray node(s) with {cpus:g} free CPU(s) and "
                                         f"{gpus:g} free GPU(s); {len(free)} free now")
        return queue.Decision(fields={"worker_id": free[0]["NodeID"]})

    def launch(self, job: m.Job) -> m.Job:
        self._launching.add(job.id)  # only this server admits and launches its Ray jobs
        try:
            return self._launch(job)
        except Exception as exc:  # the cluster refused it: the job fails (resumable), nothing stays reserved
            self._cleanup(job.id)
            self._lost[job.id] = reason = (f"the Ray executor could not start the job ({type(exc).__name__}: "
                                           f"{exc}); resume it with resume_from_checkpoint=latest")
            moved = self.store.transition(job.id, m.ACTIVE_STATES, m.FAILED, reason=reason, resumable=True,
                                          finished_at=time.time())
            if moved is not None:
                self.store.append_event(Event(type="job.failed", job_id=job.id, level="error",
                                              data={"reason": reason, "resumable": True}))
            return moved or self.store.get_job(job.id)
        finally:
            self._launching.discard(job.id)

    def _launch(self, job: m.Job) -> m.Job:
        ray = self.ray()
        from ray.util.scheduling_strategies import (
            NodeAffinitySchedulingStrategy,
            PlacementGroupSchedulingStrategy,
        )

        from simpletuner_ray.actor import JobActor

        machines, cpus, gpus = nodes.per_machine(job)
        actor_cls = ray.remote(JobActor)
        base = dict(namespace=NAMESPACE, lifetime="detached", num_cpus=cpus, num_gpus=gpus, max_restarts=0)
        payload = job.to_dict()
        info: dict[str, Any] = {"watermark": 0, "actors": [], "pg": None, "nodes": [job.worker_id]}
        if machines == 1:
            name = f"simpletuner-job-{job.id}"
            strategy = NodeAffinitySchedulingStrategy(job.worker_id, soft=False)
            actors = [actor_cls.options(name=name, scheduling_strategy=strategy, **base).remote(
                payload, self._home(job.worker_id))]
            info["actors"] = [name]
        else:
            from ray.util import placement_group

            fit = nodes.matching(self.cluster_nodes(), job.worker_labels)
            bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
            pg_name = f"simpletuner-pg-{job.id}"
            label = nodes.selector(fit, job.worker_labels)
            pg = placement_group([bundle] * machines, strategy="STRICT_SPREAD", name=pg_name, lifetime="detached",
                                 bundle_label_selector=[label] * machines if label else None)
            info["pg"] = pg_name
            self.store.set_setting(state_key(job.id), info)
            ray.get(pg.ready(), timeout=CALL_TIMEOUT_S)
            table = ray.util.placement_group_table(pg)
            bundle_nodes = [table["bundles_to_node_id"][i] for i in range(machines)]
            actors = []
            for rank in range(machines):
                name = f"simpletuner-job-{job.id}-{rank}"
                strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank)
                actors.append(actor_cls.options(name=name, scheduling_strategy=strategy, **base).remote(
                    payload, self._home(bundle_nodes[rank])))
                info["actors"].append(name)
            info["nodes"] = bundle_nodes
        self.store.set_setting(state_key(job.id), info)
        if machines == 1:
            ray.get(actors[0].start.remote({}), timeout=CALL_TIMEOUT_S)
        else:
            ip, port = ray.get(actors[0].address.remote(), timeout=CALL_TIMEOUT_S)
            ray.get([a.start.remote({"--machine_rank": rank, "--main_process_ip": ip, "--main_process_port": port})
                     for rank, a in enumerate(actors)], timeout=CALL_TIMEOUT_S)
        return self.store.update_job(job.id, worker_id=info["nodes"][0], started_at=time.time())

    def _home(self, node_id: str) -> str:
        return str(Path(self.node_home) / str(node_id)[:16])

    def alive(self, job: m.Job) -> bool:
        """Mirroring fails lost jobs itself; this catches a launch that never got as far as recording its actors."""
        if job.id in self._lost:
            return False
        return job.id in self._launching or self.store.get_setting(state_key(job.id)) is not None

    def tick(self) -> None:
        """Mirror our jobs; after a server restart this reconnects as soon as one of them is still active."""
        if self._connected or mine(self.name, self.store.list_jobs(states=m.ACTIVE_STATES)):
            self.sync()

    # -- mirroring ----------------------------------------------------------------------------------------
    def sync(self) -> bool:
        """Mirror every active job of ours once; True when one of them ended (the queue may admit more)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            ended = False
            for job in mine(self.name, self.store.list_jobs(states=m.ACTIVE_STATES)):
                info = self.store.get_setting(state_key(job.id))
                if not info or job.id in self._lost or job.id in self._launching:
                    continue
                try:
                    ended |= self._sync_job(job, info)
                except Exception:  # a transient cluster error: the next sync retries (the watermark holds)
                    log.warning("mirroring Ray job %s failed; retrying", job.id, exc_info=True)
            return ended
        finally:
            self._lock.release()

    def _sync_job(self, job: m.Job, info: dict[str, Any]) -> bool:
        ray = self.ray()
        commands = self.store.take_commands(job.id)
        try:
            handles = [ray.get_actor(name, namespace=NAMESPACE) for name in info["actors"]]
            polls = ray.get([h.poll.remote(info["watermark"] if rank == 0 else 1 << 62,
                                           commands if rank == 0 else [])
                             for rank, h in enumerate(handles)], timeout=CALL_TIMEOUT_S)
        except Exception as exc:  # actor gone (node lost, killed) or the cluster unreachable
            return self._fail(job, info, f"the Ray executor lost the job ({type(exc).__name__}: {exc})")
        if not all(p["started"] for p in polls):  # still launching: nothing to mirror yet
            for command in commands:
                self.store.post_command(job.id, command)
            return False
        if len(handles) > 1 and commands:  # every rank sees stop/cancel/validate/checkpoint
            ray.get([h.poll.remote(1 << 62, commands) for h in handles[1:]], timeout=CALL_TIMEOUT_S)
        head = polls[0]
        self._mirror(job, info, head)
        for rank, poll in enumerate(polls[1:], start=1):
            if poll["returncode"] not in (None, 0):
                return self._fail(job, info, f"rank {rank}'s trainer on Ray node {info['nodes'][rank]} exited "
                                             f"with code {poll['returncode']}; the job's other ranks were stopped")
        if head["returncode"] is None:
            return False
        if head["job"]["state"] not in m.FINAL_STATES:  # exited without recording an end: a crash
            return self._fail(job, info, f"rank 0's trainer on Ray node {info['nodes'][0]} exited with code "
                                         f"{head['returncode']} without finishing the job")
        self._drain(job, info, handles[0])
        node = head["job"]
        self._cleanup(job.id)
        moved = self.store.transition(job.id, m.ACTIVE_STATES, node["state"], **{k: node[k] for k in MIRRORED})
        return moved is not None

    def _mirror(self, job: m.Job, info: dict[str, Any], poll: dict[str, Any]) -> None:
        """Append the new events and move the watermark in one transaction: each event lands exactly once."""
        with self.store.transaction():
            for _, raw in poll["events"]:
                self.store.append_event(attrs.evolve(Event.from_dict(raw), id=0, job_id=job.id))
            if poll["events"]:
                info["watermark"] = poll["events"][-1][0]
                self.store.set_setting(state_key(job.id), info)
            if job.state == m.STARTING and poll["job"]["state"] == m.RUNNING:
                self.store.transition(job.id, [m.STARTING], m.RUNNING, started_at=poll["job"]["started_at"])

    def _drain(self, job: m.Job, info: dict[str, Any], head: Any) -> None:
        ray = self.ray()
        while True:
            poll = ray.get(head.poll.remote(info["watermark"], []), timeout=CALL_TIMEOUT_S)
            if not poll["events"]:
                return
            self._mirror(self.store.get_job(job.id), info, poll)

    def _fail(self, job: m.Job, info: dict[str, Any], reason: str) -> bool:
        try:
            handle = self.ray().get_actor(info["actors"][0], namespace=NAMESPACE)
            self._drain(job, info, handle)  # what rank 0 recorded before the end still arrives
        except Exception:
            pass
        self._cleanup(job.id)
        reason = f"{reason}; resume it with resume_from_checkpoint=latest"
        moved = self.store.transition(job.id, m.ACTIVE_STATES, m.FAILED, reason=reason, resumable=True,
                                      finished_at=time.time())
        if moved is not None:
            self.store.append_event(Event(type="job.failed", job_id=job.id, level="error",
                                          data={"reason": reason, "resumable": True}))
        return moved is not None

    def _cleanup(self, job_id: str) -> None:
        """Kill every rank's trainer and actor and release the placement group (idempotent)."""
        info = self.store.get_setting(state_key(job_id)) or {}
        ray = self.ray()
        handles = []
        for name in info.get("actors") or []:
            try:
                handles.append(ray.get_actor(name, namespace=NAMESPACE))
            except ValueError:
                continue
        try:
            ray.get([h.kill.remote() for h in handles], timeout=CALL_TIMEOUT_S)
        except Exception:
            pass
        for h in handles:
            ray.kill(h, no_restart=True)
        if info.get("pg"):
            from ray.util import get_placement_group, remove_placement_group

            try:
                remove_placement_group(get_placement_group(info["pg"]))
            except Exception:
                pass
        with self.store.transaction():
            self.store.set_setting(state_key(job_id), None)

    # -- workers ------------------------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        """Every Ray node as a worker dict (``worker_type: "ray"``) for the admin workers listing."""
        running: dict[str, str] = {}
        for job in mine(self.name, self.store.list_jobs(states=m.ACTIVE_STATES)):
            info = self.store.get_setting(state_key(job.id)) or {}
            for node_id in info.get("nodes") or [job.worker_id]:
                running.setdefault(str(node_id), job.id)
        return [nodes.worker_dict(n, running.get(n["NodeID"])) for n in self.cluster_nodes()]
