"""Multi-node jobs on a real two-node local Ray cluster: gang-scheduled ranks, equal losses, rank loss, resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from jobs_helpers import final, make_env, wait_for

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import SQLiteStore

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def losses(store: SQLiteStore, job_id: str) -> dict[int, float]:
    return {e.data["step"]: e.data["loss"] for e in store.read_events(job_id) if e.type == "training.status"}


def log_of(home: Path, job: m.Job) -> str:
    return "\n".join(p.read_text()[-2000:] for p in (home / "nodes").glob(f"*/jobs/{job.id}/trainer.log"))


def test_two_machines_on_two_nodes_equal_two_processes_on_one(ray_runner: tuple[Runner, SQLiteStore],
                                                               tmp_path: Path, tiny_pixart_dir: Path,
                                                               demo_images: Path) -> None:
    import ray

    run, store = ray_runner
    common = {"train_batch_size": 2, "max_train_steps": 4, "seed": 5}
    spread = make_env(tmp_path, tiny_pixart_dir, demo_images, name="spread", num_processes=1, num_machines=2,
                      **common)
    job_id = run.submit(env=spread, target="ray", worker_labels={"team": "*"}).job_id  # a label selector too
    info = wait_for(lambda: store.get_setting("ray.job." + job_id), timeout=60)
    assert info["pg"] and len(set(info["nodes"])) == 2  # one bundle on each node (STRICT_SPREAD)
    done = final(store, job_id, timeout=240)
    assert done.state == m.COMPLETED, (done.reason, log_of(tmp_path, done))
    assert not [g for g in ray.util.placement_group_table().values()
                if g["name"] == info["pg"] and g["state"] != "REMOVED"]  # released
    spread_losses = losses(store, job_id)

    one = make_env(tmp_path, tiny_pixart_dir, demo_images, name="one", num_processes=2, **common)
    local_id = run.submit(env=one, target="local").job_id
    assert final(store, local_id, timeout=240).state == m.COMPLETED
    assert sorted(spread_losses) == [1, 2, 3, 4]
    assert spread_losses == losses(store, local_id)


def test_a_lost_rank_fails_the_whole_job_and_it_resumes(ray_runner: tuple[Runner, SQLiteStore], tmp_path: Path,
                                                        tiny_pixart_dir: Path, demo_images: Path) -> None:
    import ray

    run, store = ray_runner
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, num_processes=1, num_machines=2, train_batch_size=2,
                   max_train_steps=12, checkpoint_step_interval=2, seed=3)
    job_id = run.submit(env=env, target="worker").job_id
    wait_for(lambda: any(e.type == "checkpoint.saved" for e in store.read_events(job_id)), timeout=180)
    info = store.get_setting("ray.job." + job_id)
    pids = [ray.get(ray.get_actor(name, namespace="simpletuner").pid.remote()) for name in info["actors"]]
    children = Path(f"/proc/{pids[1]}/task/{pids[1]}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGKILL)  # rank 1's trainer process dies; rank 0 must not hang
    done = final(store, job_id, timeout=45)
    assert done.state == m.FAILED and done.resumable and "rank 1" in done.reason
    for pid in pids:  # every process of both ranks is gone (whole process groups)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert store.get_setting("ray.job." + job_id) is None
    wait_for(lambda: not [g for g in ray.util.placement_group_table().values()
                          if g["name"] == info["pg"] and g["state"] != "REMOVED"], timeout=30)

    again = run.submit(env=env, config={"resume_from_checkpoint": "latest"}, target="worker").job_id
    resumed = final(store, again, timeout=240)
    assert resumed.state == m.COMPLETED, (resumed.reason, log_of(tmp_path, resumed))
    stage = [e for e in store.read_events(again) if e.type == "job.stage" and e.data["stage"] ==
             "init_resume_checkpoint"]
    assert stage and "at step " in stage[0].data["message"]
    assert max(losses(store, again)) == 12
