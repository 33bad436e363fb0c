"""Rules and launch argv for the training-engine keys (clipping, cadence, evaluation, caches, multi-node)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config import validate, warnings_for
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.runner import launch_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config_helpers import base, errors_of


def test_simpletuner_defaults() -> None:
    cfg = validate(base())
    assert (cfg.grad_clip_method, cfg.vae_batch_size, cfg.vae_cache_ondemand, cfg.disable_benchmark) == (
        "value", 4, False, False)
    assert (cfg.num_eval_images, cfg.eval_timesteps, cfg.eval_loss_disable, cfg.eval_dataset_id) == (4, 28, False, None)
    assert (cfg.num_machines, cfg.machine_rank, cfg.main_process_ip, cfg.main_process_port) == (
        1, 0, "127.0.0.1", 29500)
    assert cfg.checkpoint_epoch_interval is None and cfg.gradient_checkpointing_interval is None


@pytest.mark.parametrize(("overrides", "path", "message"), [
    ({"--grad_clip_method": "clamp"}, "grad_clip_method", "must be one of value, norm"),
    ({"--checkpoint_epoch_interval": -1}, "checkpoint_epoch_interval", ">= 0"),
    ({"--validation_epoch_interval": -2}, "validation_epoch_interval", ">= 0"),
    ({"--eval_steps_interval": -1}, "eval_steps_interval", ">= 0"),
    ({"--eval_epoch_interval": -1}, "eval_epoch_interval", ">= 0"),
    ({"--gradient_checkpointing": True, "--gradient_checkpointing_interval": 0}, "gradient_checkpointing_interval",
     ">= 1"),
    ({"--num_eval_images": 0}, "num_eval_images", ">= 1"),
    ({"--eval_timesteps": 0}, "eval_timesteps", ">= 1"),
    ({"--vae_batch_size": 0}, "vae_batch_size", ">= 1"),
    ({"--num_machines": 0}, "num_machines", ">= 1"),
    ({"--num_machines": 2, "--machine_rank": 2}, "machine_rank", "[0, 2)"),
    ({"--machine_rank": -1}, "machine_rank", "[0, 1)"),
    ({"--main_process_port": 0}, "main_process_port", "1..65535"),
    ({"--main_process_port": 70000}, "main_process_port", "1..65535"),
    ({"--num_machines": 2, "--main_process_ip": " "}, "main_process_ip", "required with num_machines"),
])
def test_engine_key_rules(overrides: dict[str, Any], path: str, message: str) -> None:
    errors = errors_of(base(**overrides))
    assert path in errors and message in errors[path].message, errors


def test_interval_checkpointing_without_checkpointing_warns() -> None:
    notes = warnings_for(validate(base(**{"--gradient_checkpointing_interval": 2, "--gradient_checkpointing": False})))
    assert any("gradient_checkpointing_interval has no effect without gradient_checkpointing" in n for n in notes)
    on = validate(base(**{"--gradient_checkpointing_interval": 2, "--gradient_checkpointing": True}))
    assert not any("gradient_checkpointing_interval" in n for n in warnings_for(on))


def test_multi_node_torchrun_argv() -> None:
    job = m.Job(id="j", config={"--num_processes": 2, "--num_machines": 3, "--machine_rank": 1,
                                "--main_process_ip": "10.1.2.3", "--main_process_port": 29501})
    assert launch_command(job, "py") == [
        "py", "-m", "torch.distributed.run", "--nnodes", "3", "--node_rank", "1", "--master_addr", "10.1.2.3",
        "--master_port", "29501", "--nproc_per_node", "2", "-m", "simpletuner_core.jobs.worker", "j"]
    one_each = m.Job(id="j", config={"--num_processes": 1, "--num_machines": 2, "--machine_rank": 0})
    argv = launch_command(one_each, "py")
    assert "--standalone" not in argv and argv[argv.index("--nproc_per_node") + 1] == "1"
    assert argv[argv.index("--master_addr") + 1] == "127.0.0.1" and argv[argv.index("--master_port") + 1] == "29500"


def test_multi_node_accelerate_argv() -> None:
    job = m.Job(id="j", config={"--num_processes": 4, "--num_machines": 2, "--machine_rank": 1,
                                "--main_process_ip": "node0", "--main_process_port": 1234,
                                "--accelerate_config": "/etc/acc.yaml"})
    assert launch_command(job, "py") == [
        "py", "-m", "accelerate.commands.launch", "--config_file", "/etc/acc.yaml", "--num_processes", "8",
        "--num_machines", "2", "--machine_rank", "1", "--main_process_ip", "node0", "--main_process_port", "1234",
        "-m", "simpletuner_core.jobs.worker", "j"]


def test_plot_draws_eval_loss_points(tmp_path: Path) -> None:
    from PIL import Image

    from simpletuner_core.plot import EVAL_COLOUR, write_plot

    losses = [1.0 / (i + 1) for i in range(20)]
    plain = write_plot(tmp_path / "a.png", losses, [1e-3] * 20)
    with_eval = write_plot(tmp_path / "b.png", losses, [1e-3] * 20, eval_losses=[(5, 0.5), (10, 0.3), (20, 2.0)])
    with Image.open(plain) as a, Image.open(with_eval) as b:
        assert EVAL_COLOUR not in set(a.convert("RGB").getdata())
        assert EVAL_COLOUR in set(b.convert("RGB").getdata())
