"""The Ray executor on a real two-node local Ray cluster: placement by labels, events, commands, queueing."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from jobs_helpers import final, make_env, wait_for

from simpletuner_core.jobs import executors as ex
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import SQLiteStore

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def node_ids() -> dict[str, str]:
    import ray

    return {n["Labels"]["team"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_nodes_are_listed_as_ray_workers(ray_runner: tuple[Runner, SQLiteStore]) -> None:
    run, _ = ray_runner
    workers = {w["labels"]["team"]: w for w in run.executors["ray"].workers()}
    assert set(workers) == {"vision", "nlp-east"}
    east = workers["nlp-east"]
    assert east["worker_type"] == "ray" and east["status"] == "idle" and east["gpu_count"] == 0
    assert east["id"] == east["worker_id"] == node_ids()["nlp-east"] and east["cpu_count"] == 2
    assert {w["id"] for w in ex.listed_workers(run.executors)} == {w["id"] for w in workers.values()}


def test_a_node_that_leaves_is_listed_offline(ray_runner: tuple[Runner, SQLiteStore], cluster: Any) -> None:
    run, _ = ray_runner
    node = cluster.add_node(num_cpus=1, labels={"team": "temp"})
    cluster.wait_for_nodes()
    status = lambda: {w["labels"].get("team"): w["status"] for w in run.executors["ray"].workers()}.get("temp")  # noqa: E731
    assert status() == "idle"
    cluster.remove_node(node)
    wait_for(lambda: status() == "offline", timeout=60, every=0.5)


def test_labelled_job_runs_on_the_matching_node_with_every_event_once(
        ray_runner: tuple[Runner, SQLiteStore], tmp_path: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    run, store = ray_runner
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=3, checkpoint_step_interval=2)
    result = run.submit(env=env, target="worker", worker_labels={"team": "nlp-*"})
    assert result.status == "running", result
    job = store.get_job(result.job_id)
    assert job.executor == "ray" and job.worker_id == node_ids()["nlp-east"]
    done = final(store, job.id, timeout=180)
    node_store = SQLiteStore(tmp_path / "nodes" / job.worker_id[:16] / "state.db")
    assert done.state == m.COMPLETED, (done.reason, (tmp_path / "nodes" / job.worker_id[:16] / "jobs" / job.id /
                                                     "trainer.log").read_text()[-3000:])
    here = [(e.type, e.data) for e in store.read_events(job.id)]
    there = [(e.type, e.data) for e in node_store.read_events(job.id)]
    assert here[0][0] == "job.queued"  # recorded by this server before the node ran anything
    assert here[1:] == there  # every node event, once, in order
    assert [d["step"] for t, d in here if t == "training.status"] == [1, 2, 3]
    assert (tmp_path / "output" / env / "checkpoint-2").is_dir()  # outputs on the shared filesystem
    assert store.get_setting("ray.job." + job.id) is None  # actors gone, nothing reserved
    assert not [w for w in run.executors["ray"].workers() if w["status"] == "busy"]


def test_commands_reach_the_trainer_on_its_node(ray_runner: tuple[Runner, SQLiteStore], tmp_path: Path,
                                                 tiny_pixart_dir: Path, demo_images: Path) -> None:
    run, store = ray_runner
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=10_000)
    job_id = run.submit(env=env, target="ray", worker_labels={"team": "nlp-east"}).job_id
    wait_for(lambda: any(e.type == "training.status" for e in store.read_events(job_id)), timeout=120)
    east = next(w for w in run.executors["ray"].workers() if w["labels"].get("team") == "nlp-east")
    assert east["status"] == "busy" and east["current_job_id"] == job_id
    run.command(job_id, "validate")
    run.command(job_id, "checkpoint")
    wait_for(lambda: any(e.type == "checkpoint.saved" for e in store.read_events(job_id)), timeout=60)
    run.command(job_id, "stop")
    done = final(store, job_id, timeout=60)
    assert done.state == m.STOPPED and done.resumable
    assert store.get_setting("ray.job." + job_id) is None


def test_a_job_larger_than_any_node_waits_with_a_reason_and_no_wait_rejects(
        ray_runner: tuple[Runner, SQLiteStore], tmp_path: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    run, store = ray_runner
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, num_processes=3)
    rejected = run.submit(env=env, target="worker", no_wait=True)
    assert rejected.status == "rejected" and "3 CPU(s)" in rejected.reason
    queued = run.submit(env=env, target="worker")
    assert queued.status == "queued" and "0 of the 2 matching node(s)" in queued.reason
    time.sleep(0.2)
    run.kick()
    assert store.get_job(queued.job_id).state == m.QUEUED
    run.command(queued.job_id, "cancel")


def test_a_real_server_with_ray_address_runs_submitted_jobs_on_the_cluster(
        cluster: Any, tmp_path: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    """``simpletuner server --ray-address``: the nodes are listed as workers, and a plain ``target: auto`` submit
    over HTTP lands on a Ray node."""
    import asyncio

    from simpletuner_server.demo_command import free_port, stop_server
    from simpletuner_server.walkthrough import Api, session, setup_admin

    home = tmp_path / "server"
    home.mkdir()
    env = make_env(home, tiny_pixart_dir, demo_images, max_train_steps=2)
    port = free_port()
    os.environ["SIMPLETUNER_RAY_NODE_HOME"] = str(tmp_path / "nodes")  # the server reads it; nodes share it here
    try:
        proc = start_server_with_ray(home, port, cluster.address)
    finally:
        del os.environ["SIMPLETUNER_RAY_NODE_HOME"]

    async def submit() -> Any:
        async with session(f"http://127.0.0.1:{port}") as http:
            api = Api(http, lambda *_: None)
            await setup_admin(api)
            listed = await api.call("GET", "/api/admin/workers", expect=(200,))
            status = await api.call("GET", "/api/system/status?include_allocation=true", expect=(200,))
            started = await api.call("POST", "/api/queue/submit", expect=(200,), json={"config_name": env})
            return listed, status, started

    try:
        listed, status, started = asyncio.run(submit())
        rays = [w for w in listed["workers"] if w["worker_type"] == "ray"]
        assert {w["labels"].get("team") for w in rays} >= {"nlp-east", "vision"}
        assert {w["id"] for w in status["gpu_allocation"]["workers"]} >= {w["id"] for w in rays}
        store = SQLiteStore(home / "state.db")
        done = final(store, started["job_id"], timeout=180)
        assert done.executor == "ray" and done.worker_id in node_ids().values()
        assert done.state == m.COMPLETED, done.reason
        assert [e.data["step"] for e in store.read_events(done.id) if e.type == "training.status"] == [1, 2]
    finally:
        stop_server(proc)


def start_server_with_ray(home: Path, port: int, address: str) -> Any:
    import subprocess
    import urllib.request

    with open(home / "server.log", "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "simpletuner_core.cli", "server", "--port", str(port),
                                 "--home", str(home), "--ray-address", address], stdout=log,
                                stderr=subprocess.STDOUT)

    def up() -> bool:
        assert proc.poll() is None, (home / "server.log").read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return True
        except OSError:
            return False

    wait_for(up, timeout=60, every=0.1)
    return proc
