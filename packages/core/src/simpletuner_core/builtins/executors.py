"""Built-in executor: ``local`` (this machine's GPUs or CPU slot)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import ExecutorSpec


def _local(runner: Any) -> Any:
    from simpletuner_core.jobs.executors.local import LocalExecutor

    return LocalExecutor(runner.store, runner.home, runner.devices)


@hookimpl
def register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    register(ExecutorSpec("local", _local, "A trainer subprocess on this machine, on its GPUs or CPU slot.",
                          remote=False))
