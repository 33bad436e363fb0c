"""A job with num_processes=2 runs as two real trainer processes (torchrun, gloo on CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs_helpers import events_of, final, make_env, runner

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.runner import launch_command

pytestmark = pytest.mark.slow


def test_launch_commands() -> None:
    one = m.Job(id="j", config={"--num_processes": 1})
    assert launch_command(one, "py") == ["py", "-m", "simpletuner_core.jobs.worker", "j"]
    two = m.Job(id="j", config={"--num_processes": 2})
    assert launch_command(two, "py")[:6] == ["py", "-m", "torch.distributed.run", "--standalone",
                                             "--nproc_per_node", "2"]
    custom = m.Job(id="j", config={"--num_processes": 4, "--accelerate_config": "/etc/acc.yaml"})
    assert launch_command(custom, "py")[:7] == ["py", "-m", "accelerate.commands.launch", "--config_file",
                                                "/etc/acc.yaml", "--num_processes", "4"]


def test_two_processes_train_checkpoint_and_report_once(tmp_path: Path, tiny_pixart_dir: Path,
                                                        demo_images: Path) -> None:
    env = make_env(tmp_path, tiny_pixart_dir, demo_images, num_processes=2, train_batch_size=2,
                   max_train_steps=6, checkpoint_step_interval=3, validation_prompt="a red square",
                   validation_steps=0, validation_num_inference_steps=2, validation_disable_unconditional=True)
    run, store = runner(tmp_path, devices=[])
    job_id = run.submit(env=env).job_id
    job = final(store, job_id, timeout=240)
    log = (tmp_path / "jobs" / job_id / "trainer.log").read_text()
    assert job.state == m.COMPLETED, log[-3000:]
    steps = [e.data["step"] for e in events_of(store, job_id, "training.status")]
    assert steps == [1, 2, 3, 4, 5, 6]  # the main process reports for both
    plan = events_of(store, job_id, "job.plan")[0].data["plan"]
    assert plan["micro_batches_per_epoch"] == 3  # 12 images / (2 per process × 2 processes)
    checkpoint = tmp_path / "output" / env / "checkpoint-3"
    assert (checkpoint / "manifest.json").exists()
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl",
                                                                       "random_states_1.pkl"}
    assert len(events_of(store, job_id, "validation.image")) == 1
    assert (tmp_path / "output" / env / "model_index.json").exists()
