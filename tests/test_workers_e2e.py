"""Remote workers end to end: a real ``simpletuner server`` and two real ``simpletuner worker`` processes on
loopback, tiny PixArt jobs on CPU. One server and two workers serve the whole module (tests run in order)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("simpletuner_server")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs_helpers import make_env
from workers_helpers import Client, admin_key, events, preset, start_worker, stop, wait_until

from simpletuner_core.jobs.store import SQLiteStore
from simpletuner_core.plugins import get_registry
from simpletuner_server.demo_command import free_port, start_server, stop_server

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("pixart_sigma" not in get_registry().families, reason="needs the pixart plugin")]
STEPS = 4
LONG = 250  # steps: long enough (several seconds) to restart the server in the middle


class Cluster:
    def __init__(self, root: Path, tiny: Path, images: Path) -> None:
        self.root, self.home = root, root / "orchestrator"
        self.home.mkdir()
        preset(self.home)
        make_env(self.home, tiny, images, "toy", max_train_steps=STEPS)
        make_env(self.home, tiny, images, "long", max_train_steps=LONG, checkpoint_step_interval=0)
        make_env(self.home, tiny, images, "saved", max_train_steps=60, checkpoint_step_interval=10)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = start_server(self.home, self.port, root / "server.log")
        self.api = Client(self.base, {"X-API-Key": admin_key(self.base)})
        self.store = SQLiteStore(self.home / "state.db")
        self.workers: dict[str, dict[str, Any]] = {}
        for name, labels, extra in (("a-cpu", {"gpu_type": "cpu-small", "team": "nlp"}, ()),
                                    ("b-far", {"gpu_type": "gpu-big", "team": "vision"}, ("--no-shared-storage",))):
            made = self.api.ok("POST", "/api/admin/workers", {"name": name, "worker_type": "persistent",
                                                              "labels": labels}, expect=(201,))
            self.workers[name] = {**made, "extra": extra}
            self.start(name)

    def start(self, name: str) -> None:
        w = self.workers[name]
        w["proc"] = start_worker(self.base, w["token"], self.root / name, name, *w["extra"])

    def listed(self) -> dict[str, dict[str, Any]]:
        return {w["name"]: w for w in self.api.ok("GET", "/api/admin/workers")["workers"]}

    def submit(self, expect: tuple[int, ...] = (200, 202), **body: Any) -> Any:
        return self.api.ok("POST", "/api/queue/submit", {"config_name": "toy", **body}, expect=expect)

    def job(self, job_id: str) -> Any:
        return self.store.get_job(job_id)

    def final(self, job_id: str, timeout: float = 240.0) -> Any:
        job = wait_until(lambda: (j := self.job(job_id)).state in ("completed", "failed", "stopped", "cancelled")
                         and j, timeout)
        return job

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.root.glob("*.log"))

    def close(self) -> None:
        for w in self.workers.values():
            stop(w["proc"])
        stop_server(self.server)
        self.store.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_pixart_dir: Path, demo_images: Path) -> Any:
    c = Cluster(tmp_path_factory.mktemp("workers"), tiny_pixart_dir, demo_images)
    try:
        wait_until(lambda: {w["status"] for w in c.listed().values()} == {"idle"}, 60)
        yield c
    finally:
        c.close()


def steps_of(evs: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["step"] for e in evs if e.get("event_type") == "training.status"]


def test_two_workers_listed_idle_with_both_spellings(cluster: Cluster) -> None:
    listed = cluster.listed()
    a = listed["a-cpu"]
    assert a["status"] == "idle" and a["id"] == a["worker_id"] and a["worker_type"] == "persistent"
    assert a["gpu_count"] == 0 and a["gpu_info"]["count"] == 0 and a["gpu_info"]["accelerator"] == "cpu"
    assert a["cpu_count"] == os.cpu_count() and a["last_heartbeat"] and a["current_job_id"] is None
    assert listed["b-far"]["labels"] == {"gpu_type": "gpu-big", "team": "vision"}
    status = cluster.api.ok("GET", "/api/system/status?include_allocation=true")
    assert {w["name"] for w in status["gpu_allocation"]["workers"]} == {"a-cpu", "b-far"}
    assert {w["name"] for w in cluster.api.ok("GET", "/api/queue/stats")["workers"]} == {"a-cpu", "b-far"}


def test_labelled_job_runs_on_the_matching_worker_with_every_event(cluster: Cluster) -> None:
    answer = cluster.submit(target="worker", worker_labels={"gpu_type": "cpu*"})
    job = cluster.final(answer["job_id"])
    assert job.state == "completed", cluster.log()
    assert (job.executor, job.worker_id) == ("worker", cluster.workers["a-cpu"]["worker_id"])
    evs = events(cluster.api, job.id)
    assert steps_of(evs) == list(range(1, STEPS + 1)), [e["event_type"] for e in evs]
    kinds = Counter(e["event_type"] for e in evs)
    assert kinds["job.queued"] == 1 and kinds["job.started"] == 1 and kinds["job.completed"] == 1, kinds
    data = next(e["data"] for e in evs if e["event_type"] == "worker.data")
    assert data["in_place"] == data["files"] > 0 and data["fetched_files"] == 0  # shared storage: read in place
    outputs = next(e["data"] for e in evs if e["event_type"] == "worker.outputs")
    assert outputs["output_dir"].startswith(str(cluster.root / "a-cpu"))
    assert any(f["path"] == "model_index.json" and f["size"] > 0 for f in outputs["files"])
    import urllib.request

    request = urllib.request.Request(f"{cluster.base}/api/training/events/stream?job_id={job.id}",
                                     headers=cluster.api.headers)
    with urllib.request.urlopen(request, timeout=60) as resp:  # final job: the stream replays and ends
        text = resp.read().decode()
    assert text.count("event: training.status") >= STEPS and "event: end" in text
    wait_until(lambda: cluster.listed()["a-cpu"]["status"] == "idle", 30)


def test_local_target_and_auto_without_a_matching_worker_run_locally(cluster: Cluster) -> None:
    local = cluster.submit(target="local")
    auto = cluster.submit(target="auto", worker_labels={"team": "nobody"})
    for answer in (local, auto):
        job = cluster.job(answer["job_id"])
        assert job.executor == "local" or job.state == "queued", job
    for answer in (local, auto):
        job = cluster.final(answer["job_id"])
        assert job.state == "completed" and job.executor == "local" and job.worker_id is None, cluster.log()


def test_worker_target_without_a_match_waits_and_no_wait_rejects(cluster: Cluster) -> None:
    queued = cluster.submit(target="worker", worker_labels={"team": "nobody"}, expect=(202,))
    assert queued["status"] == "queued" and "nobody" in queued["reason"]
    status, body = cluster.api.call("POST", "/api/queue/submit", {"config_name": "toy", "target": "worker",
                                                                  "worker_labels": {"team": "nobody"},
                                                                  "no_wait": True})
    assert status == 409 and body["status"] == "rejected", body
    status, body = cluster.api.call("POST", "/api/queue/submit", {"config_name": "toy", "target": "moon"})
    assert status == 422 and body["error"]["errors"][0]["path"] == "target", body
    status, body = cluster.api.call("POST", "/api/queue/submit", {"config_name": "toy", "worker_labels": [1]})
    assert status == 422 and body["error"]["errors"][0]["path"] == "worker_labels", body
    time.sleep(1.5)  # a few housekeeping ticks: still waiting
    assert cluster.job(queued["job_id"]).state == "queued"
    cluster.api.ok("POST", "/api/training/cancel", {"job_id": queued["job_id"]})
    assert cluster.job(queued["job_id"]).state == "cancelled"


def test_a_worker_without_shared_storage_fetches_by_hash_once(cluster: Cluster) -> None:
    fetched = []
    for _ in range(2):
        answer = cluster.submit(target="worker", worker_labels={"team": "vision"})
        job = cluster.final(answer["job_id"])
        assert job.state == "completed" and job.worker_id == cluster.workers["b-far"]["worker_id"], cluster.log()
        fetched.append(next(e["data"] for e in events(cluster.api, job.id) if e["event_type"] == "worker.data"))
    assert fetched[0]["fetched_files"] == fetched[0]["files"] > 0 and fetched[0]["in_place"] == 0
    assert fetched[0]["fetched_bytes"] > 0
    assert fetched[1]["fetched_files"] == 0 and fetched[1]["cached_files"] == fetched[1]["files"]


def test_b_comes_back_with_shared_storage(cluster: Cluster) -> None:
    """The same worker (same token and id) restarted without --no-shared-storage: it reads data in place now."""
    stop(cluster.workers["b-far"]["proc"])
    cluster.workers["b-far"]["extra"] = ()
    cluster.start("b-far")
    wait_until(lambda: cluster.listed()["b-far"]["status"] == "idle", 60)


def _kill_machine(cluster: Cluster, name: str) -> None:
    """kill -9 the agent and the trainer it spawned (the machine dies)."""
    agent_store = SQLiteStore(cluster.root / name / "state.db")
    pids = [j.pid for j in agent_store.list_jobs(states=("starting", "running", "stopping")) if j.pid]
    agent_store.close()
    os.kill(cluster.workers[name]["proc"].pid, signal.SIGKILL)
    cluster.workers[name]["proc"].wait()
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_kill_9_of_the_busy_worker_requeues_its_job_on_the_other(cluster: Cluster) -> None:
    answer = cluster.submit(target="worker", config_name="saved")
    job_id = answer["job_id"]
    wait_until(lambda: any(e["event_type"] == "checkpoint.saved" for e in events(cluster.api, job_id)), 120)
    first = cluster.job(job_id)
    assert first.worker_id == cluster.workers["a-cpu"]["worker_id"]
    cluster.store.set_setting("worker_offline_after_s", 4.0)  # settable at run time; shortened here
    _kill_machine(cluster, "a-cpu")
    wait_until(lambda: cluster.listed()["a-cpu"]["status"] == "offline", 30)
    cluster.store.set_setting("worker_offline_after_s", 15.0)
    job = cluster.final(job_id, 300)
    assert job.state == "completed" and job.attempts == 1, cluster.log()
    assert job.worker_id == cluster.workers["b-far"]["worker_id"]
    evs = events(cluster.api, job_id)
    requeued = [e for e in evs if e["event_type"] == "job.requeued"]
    assert len(requeued) == 1 and requeued[0]["data"]["worker_id"] == first.worker_id
    assert requeued[0]["data"]["attempt"] == 1 and requeued[0]["data"]["max_attempts"] == 3
    assert steps_of(evs)[-1] == 60
    # the new worker reaches the lost one's last reported checkpoint (same disk here) and resumes from it
    data = [e["data"] for e in evs if e["event_type"] == "worker.data"]
    assert len(data) == 2 and "checkpoint-" in data[1]["resumed_from"], data
    assert requeued[0]["data"]["resume_checkpoint"] == data[1]["resumed_from"]
    after = steps_of(evs[evs.index(requeued[0]):])
    assert after[0] > 1 and after[-1] == 60, after
    cluster.start("a-cpu")  # it comes back: idle again
    wait_until(lambda: cluster.listed()["a-cpu"]["status"] == "idle", 60)


def test_orchestrator_restart_mid_job_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    answer = cluster.submit(target="worker", worker_labels={"team": "vision"}, config_name="long")
    job_id = answer["job_id"]
    cluster.store.set_setting("worker_offline_after_s", 60.0)  # a slow restart on a loaded box is no outage
    wait_until(lambda: steps_of(events(cluster.api, job_id)), 120)
    assert stop_server(cluster.server) == 0
    agent_store = SQLiteStore(cluster.root / "b-far" / "state.db")
    assert agent_store.get_job(job_id).state == "running"  # really mid-job
    time.sleep(1.0)  # the trainer keeps stepping; the agent buffers and retries
    agent_store.close()
    cluster.server = start_server(cluster.home, cluster.port, cluster.root / "server2.log")
    job = cluster.final(job_id, 300)
    assert job.state == "completed" and job.attempts == 0, cluster.log()
    evs = events(cluster.api, job_id)
    assert steps_of(evs) == list(range(1, LONG + 1))
    ids = [e["id"] for e in evs]
    assert ids == sorted(set(ids))
    kinds = Counter(e["event_type"] for e in evs)
    assert kinds["job.started"] == kinds["job.completed"] == kinds["worker.data"] == 1, kinds
    cluster.store.set_setting("worker_offline_after_s", 15.0)


def test_cancel_reaches_the_agent(cluster: Cluster) -> None:
    answer = cluster.submit(target="worker", worker_labels={"team": "vision"}, config_name="long")
    job_id = answer["job_id"]
    wait_until(lambda: steps_of(events(cluster.api, job_id)), 120)
    cluster.api.ok("POST", "/api/training/cancel", {"job_id": job_id})
    job = cluster.final(job_id, 60)
    assert job.state == "cancelled", cluster.log()
    assert len(steps_of(events(cluster.api, job_id))) < LONG
    agent_store = SQLiteStore(cluster.root / "b-far" / "state.db")
    assert agent_store.get_job(job_id).state == "cancelled"  # the trainer on the worker stopped
    agent_store.close()


def test_drain_ends_the_agent_then_delete(cluster: Cluster) -> None:
    b = cluster.workers["b-far"]
    wait_until(lambda: cluster.listed()["b-far"]["status"] == "idle", 30)
    cluster.api.ok("POST", f"/api/admin/workers/{b['worker_id']}/drain")
    assert b["proc"].wait(30) == 0  # idle: it exits at once
    wait_until(lambda: cluster.listed()["b-far"]["status"] == "offline", 10)
    cluster.api.ok("DELETE", f"/api/admin/workers/{b['worker_id']}")
    assert "b-far" not in cluster.listed()
    status, _ = Client(cluster.base, {"X-Worker-Token": b["token"]}).call("POST", "/api/workers/heartbeat", {})
    assert status == 401


def test_an_ephemeral_worker_runs_one_job_uploads_its_weights_and_exits(cluster: Cluster) -> None:
    made = cluster.api.ok("POST", "/api/admin/workers", {"name": "c-once", "worker_type": "ephemeral",
                                                         "labels": {"team": "once"}}, expect=(201,))
    proc = start_worker(cluster.base, made["token"], cluster.root / "c-once", "c-once", "--worker_upload_outputs",
                        persistent=False)
    try:
        wait_until(lambda: cluster.listed()["c-once"]["status"] == "idle", 60)
        shutil.rmtree(cluster.home / "output" / "toy", ignore_errors=True)  # the local jobs' weights
        answer = cluster.submit(target="worker", worker_labels={"team": "once"})
        job = cluster.final(answer["job_id"])
        assert job.state == "completed" and job.worker_id == made["worker_id"], cluster.log()
        assert proc.wait(30) == 0  # one job, then it leaves
        assert cluster.listed()["c-once"]["status"] == "offline"
        uploaded = Path(job.output_dir)  # the orchestrator's output dir holds the final weights now
        assert (uploaded / "model_index.json").is_file() and (uploaded / "transformer").is_dir()
        assert not any(p.name.startswith("checkpoint") for p in uploaded.iterdir())
    finally:
        stop(proc)
