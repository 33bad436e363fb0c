"""Remote-worker benchmarks: dispatch latency and event forwarding throughput, on loopback.

A real ``simpletuner server`` subprocess and a real ``simpletuner worker`` subprocess share this machine, so
the numbers show the protocol's own cost (no network). Print-only; record results in docs/benchmarks.md.

    python bench/workers.py                # about a minute on 2 cores
    python bench/workers.py --rounds 5 --events 50000

* dispatch latency: ``POST /api/queue/submit`` → the first ``training.status`` event of a tiny PixArt job on an
  idle worker, minus the same for the same job run locally (``target: local``); rounds interleaved, medians.
* forwarding: N events written to the agent's local store for a dispatched job, then the agent's forwarder
  (batches of 500, the orchestrator storing each once behind its watermark); events/s until all are stored.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from workers_helpers import Client, admin_key, preset, start_worker, stop, wait_until  # noqa: E402

from simpletuner_core.demo_data import write_demo_dataset  # noqa: E402
from simpletuner_server.demo_command import free_port, start_server, stop_server  # noqa: E402


def first_step_delay(api: Client, body: dict[str, Any]) -> float:
    t0 = time.time()
    answer = api.ok("POST", "/api/queue/submit", body, expect=(200, 202))

    def first() -> float | None:
        evs = api.ok("GET", f"/api/training/events?job_id={answer['job_id']}&limit=10000")["events"]
        steps = [e["unix_timestamp"] for e in evs if e["event_type"] == "training.status"]
        return steps[0] if steps else None

    stamp = wait_until(first, 300, every=0.02)
    wait_until(lambda: api.ok("GET", f"/api/training/events?job_id={answer['job_id']}&limit=10000")["events"][-1]
               ["event_type"] in ("job.completed", "worker.outputs"), 300)
    return stamp - t0


def forwarding(base: str, api: Client, home: Path, count: int) -> tuple[float, int]:
    from simpletuner_core.agent.agent import Agent
    from simpletuner_core.agent.client import Orchestrator
    from simpletuner_core.events.types import Event
    from simpletuner_core.jobs import models as m
    from simpletuner_core.jobs.store import SQLiteStore
    from simpletuner_core.workers import tables

    made = api.ok("POST", "/api/admin/workers", {"name": "bench-forwarder"}, expect=(201,))
    client = Orchestrator(base, made["token"])
    client.call("POST", "/api/workers/register", {"gpu_count": 0, "cpu_count": 1})
    orchestrator = SQLiteStore(home / "state.db")
    job_id = "bench-forward"
    orchestrator.create_job(m.Job(id=job_id, config={}, state=m.RUNNING, executor="worker",
                                  worker_id=made["worker_id"], created_at=time.time()))
    tables.start_run(orchestrator, job_id, 0, made["worker_id"], [])
    agent = Agent(client, home / "forwarder", say=lambda line: None)
    agent.store.create_job(m.Job(id=job_id, config={}, state=m.RUNNING, created_at=time.time()))
    with agent.store.transaction():
        for step in range(count):
            agent.store.append_event(Event(type="training.status", job_id=job_id,
                                           data={"step": step, "total": count, "loss": 0.1}))
    agent.store.update_job(job_id, state=m.COMPLETED)
    current = {"job_id": job_id, "attempt": 0, "local_id": job_id, "gone": False}
    t0 = time.perf_counter()
    agent._forward(current)
    elapsed = time.perf_counter() - t0
    stored = len(orchestrator.read_events(job_id))
    orchestrator.close()
    return count / elapsed, stored


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    from conftest import tiny_config
    from simpletuner_core.config.environments import create_environment, save_environment
    from simpletuner_pixart.tiny import ensure_tiny_pipeline

    root = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    home = root / "orchestrator"
    home.mkdir()
    preset(home)
    images = root / "images"
    write_demo_dataset(images, count=12, size=64)
    tiny = ensure_tiny_pipeline(root / "models")
    create_environment("toy", model_family="pixart_sigma", home=home)
    save_environment("toy", tiny_config(home, tiny, images, max_train_steps=4, output_dir=str(home / "out")),
                     home=home)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(home, port, root / "server.log")
    worker = None
    try:
        api = Client(base, {"X-API-Key": admin_key(base)})
        made = api.ok("POST", "/api/admin/workers", {"name": "bench"}, expect=(201,))
        worker = start_worker(base, made["token"], root / "worker", "bench")
        wait_until(lambda: api.ok("GET", "/api/admin/workers")["workers"][0]["status"] == "idle", 60)
        first_step_delay(api, {"config_name": "toy", "target": "local"})  # warm both sides' caches
        first_step_delay(api, {"config_name": "toy", "target": "worker"})
        local, remote = [], []
        for _ in range(args.rounds):
            local.append(first_step_delay(api, {"config_name": "toy", "target": "local"}))
            wait_until(lambda: api.ok("GET", "/api/admin/workers")["workers"][0]["status"] == "idle", 60)
            remote.append(first_step_delay(api, {"config_name": "toy", "target": "worker"}))
        lm, rm = statistics.median(local), statistics.median(remote)
        print(f"submit -> first step, local:  median {lm:.2f} s  {[round(x, 2) for x in local]}")
        print(f"submit -> first step, worker: median {rm:.2f} s  {[round(x, 2) for x in remote]}")
        print(f"dispatch latency (worker - local): {rm - lm:+.2f} s")
        rate, stored = forwarding(base, api, home, args.events)
        print(f"event forwarding: {rate:,.0f} events/s ({stored} of {args.events} stored once)")
    finally:
        if worker is not None:
            stop(worker)
        stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
