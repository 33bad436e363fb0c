"""The runner with real trainer processes: lifecycle, queueing, limits, no_wait, stop, kill -9, reconcile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs_helpers import events_of, final, make_env, runner, wait_for

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs import queue
from simpletuner_core.jobs.devices import Device
from simpletuner_core.jobs.processes import start_time

pytestmark = pytest.mark.slow


def test_two_jobs_with_a_job_limit_run_one_after_the_other(tmp_path: Path, tiny_pixart_dir: Path,
                                                           demo_images: Path) -> None:
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=20)
    # Two (pretend) GPUs are free, so only the job limit keeps the second job waiting.
    run, store = runner(tmp_path, devices=[Device(0, "test", 1.0), Device(1, "test", 1.0)])
    queue.set_limits(store, local_job_max_concurrent=1)
    first = run.submit(env=env)
    second = run.submit(env=env)
    assert first.status == "running" and first.allocated_gpus == (0,)
    assert second.status == "queued" and second.queue_position == 1
    assert "local_job_max_concurrent=1" in second.reason
    a, b = final(store, first.job_id), final(store, second.job_id)
    assert a.state == b.state == m.COMPLETED
    kinds = [e.type for e in events_of(store, a.id)]
    assert kinds[0] == "job.queued" and kinds[1] == "job.started" and kinds[-1] == "job.completed"
    assert kinds.count("training.status") == 20
    # the first job's GPU was released before the second started, and the event ids show the order
    done = events_of(store, a.id, "job.completed")[0]
    started = events_of(store, b.id, "job.started")[0]
    assert done.id < started.id and b.allocated_gpus == (0,) and b.started_at >= a.finished_at


def test_no_wait_is_rejected_while_the_cpu_slot_is_busy(tmp_path: Path, tiny_pixart_dir: Path,
                                                        demo_images: Path) -> None:
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=100000)
    run, store = runner(tmp_path, devices=[])
    busy = run.submit(env=env)
    assert busy.status == "running"
    rejected = run.submit(env=env, no_wait=True)
    assert rejected.status == "rejected" and not rejected.success and rejected.job_id is None
    assert "CPU execution slot" in rejected.reason
    assert len(store.list_jobs()) == 1
    run.command(busy.job_id, "cancel")
    assert final(store, busy.job_id).state == m.CANCELLED


def test_stop_mid_run_leaves_a_valid_checkpoint_and_a_resumable_job(tmp_path: Path, tiny_pixart_dir: Path,
                                                                    demo_images: Path) -> None:
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=100000, checkpointing_steps=0)
    run, store = runner(tmp_path, devices=[])
    job_id = run.submit(env=env).job_id
    wait_for(lambda: events_of(store, job_id, "training.status"))
    assert run.command(job_id, "stop").state == m.STOPPING
    assert run.command(job_id, "stop").state in (m.STOPPING, m.STOPPED)  # idempotent
    job = final(store, job_id)
    assert job.state == m.STOPPED and job.resumable
    stopped = events_of(store, job_id, "job.stopped")[0]
    from simpletuner_core.training.checkpoint import resolve_resume

    assert str(resolve_resume("latest", tmp_path / "output" / env)) == stopped.data["checkpoint"]
    with pytest.raises(m.JobError, match="is stopped; validate applies to running jobs only"):
        run.command(job_id, "validate")


def test_kill_9_fails_the_job_with_a_reason_and_frees_the_slot(tmp_path: Path, tiny_pixart_dir: Path,
                                                               demo_images: Path) -> None:
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=100000)
    run, store = runner(tmp_path, devices=[])
    victim = run.submit(env=env).job_id
    waiting = run.submit(env=env).job_id
    wait_for(lambda: events_of(store, victim, "training.status"))
    os.kill(store.get_job(victim).pid, signal.SIGKILL)
    wait_for(lambda: run.kick() or store.get_job(waiting).state != m.QUEUED, timeout=30)
    dead = store.get_job(victim)
    assert dead.state == m.FAILED and dead.resumable
    assert "is gone (killed or crashed)" in dead.reason
    assert events_of(store, victim, "job.failed")[0].data["reason"] == dead.reason
    assert store.get_job(waiting).cpu_slot  # the slot moved on
    run.command(waiting, "cancel")
    final(store, waiting)


def test_reconcile_after_the_runner_died(tmp_path: Path) -> None:
    run, store = runner(tmp_path, devices=[])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_start = start_time(gone.pid)
    gone.wait()
    store.create_job(m.Job(id="orphan", config={}, state=m.RUNNING, pid=gone.pid, pid_start_time=gone_start,
                           cpu_slot=True, created_at=time.time()))
    # our own PID with another start time: a reused PID must not count as the trainer
    store.create_job(m.Job(id="reused", config={}, state=m.STOPPING, pid=os.getpid(),
                           pid_start_time=(start_time(os.getpid()) or 0) - 100, created_at=time.time()))
    store.create_job(m.Job(id="alive", config={}, state=m.RUNNING, pid=os.getpid(),
                           pid_start_time=start_time(os.getpid()), created_at=time.time()))
    fixed = {j.id for j in run.reconcile()}
    assert fixed == {"orphan", "reused"}
    assert store.get_job("orphan").state == m.FAILED and store.get_job("alive").state == m.RUNNING
    assert not run.reconcile()  # idempotent


def test_clear_errors_for_bad_commands_jobs_and_environments(tmp_path: Path) -> None:
    from simpletuner_core.config.environments import EnvironmentError_

    run, store = runner(tmp_path, devices=[])
    with pytest.raises(m.JobError, match="unknown job 'nope'"):
        run.command("nope", "stop")
    with pytest.raises(ValueError, match="unknown command 'explode'"):
        run.command("nope", "explode")
    with pytest.raises(EnvironmentError_, match="unknown environment 'missing'"):
        run.submit(env="missing")
    with pytest.raises(ValueError, match="invalid environment name"):
        run.submit(env="../x")
    assert store.list_jobs() == []
