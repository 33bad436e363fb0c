"""A 2-machine job on loopback: two launches (machine_rank 0 and 1) of one process each meet over gloo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs_helpers import events_of, final, make_env, runner

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.runner import launch_command

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_on_loopback_train_as_one_job(tmp_path: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    port = _free_port()
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, num_processes=1, num_machines=2, machine_rank=0,
                   main_process_ip="127.0.0.1", main_process_port=port, train_batch_size=2, max_train_steps=4,
                   checkpoint_step_interval=2)
    run, store = runner(tmp_path, devices=[])
    job_id = run.submit(env=env).job_id  # machine 0, started by the runner
    job = store.get_job(job_id)
    second = attrs.evolve(job, config={**job.config, "--machine_rank": 1})
    argv = launch_command(second)
    assert argv[argv.index("--node_rank") + 1] == "1" and argv[argv.index("--nnodes") + 1] == "2"
    log = tmp_path / "machine1.log"
    with open(log, "wb") as out:  # machine 1: the same job on "another machine" sharing the filesystem
        proc = subprocess.Popen(argv, env={**os.environ, "SIMPLETUNER_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp_path))
        try:
            assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    done = final(store, job_id, timeout=60)
    trainer_log = (tmp_path / "jobs" / job_id / "trainer.log").read_text()
    assert done.state == m.COMPLETED, trainer_log[-3000:]
    assert [e.data["step"] for e in events_of(store, job_id, "training.status")] == [1, 2, 3, 4]
    plan = events_of(store, job_id, "job.plan")[0].data["plan"]
    assert plan["micro_batches_per_epoch"] == 3  # 12 images / (2 per process × 2 processes on 2 machines)
    checkpoint = tmp_path / "output" / env / "checkpoint-2"
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl",
                                                                       "random_states_1.pkl"}
