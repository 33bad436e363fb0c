"""Built-in executors: ``local`` (this machine's GPUs or CPU slot) and ``worker`` (remote agents)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import ExecutorSpec


def _local(runner: Any) -> Any:
    from simpletuner_core.jobs.executors.local import LocalExecutor

    return LocalExecutor(runner.store, runner.home, runner.devices)


def _worker(runner: Any) -> Any:
    from simpletuner_core.jobs.executors.worker import WorkerExecutor

    return WorkerExecutor(runner.store, runner.home)


@hookimpl
def register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    register(ExecutorSpec("local", _local, "A trainer subprocess on this machine, on its GPUs or CPU slot.",
                          remote=False))
    register(ExecutorSpec("worker", _worker, "Remote `simpletuner worker` agents registered with this server.",
                          remote=True))
