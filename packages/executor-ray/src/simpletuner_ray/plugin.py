"""Registers the ``ray`` executor. Light on purpose: Ray is imported only when the executor is built and used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.jobs import executors as ex
from simpletuner_core.records import ExecutorSpec


def _ray(runner: Any) -> Any:
    """None unless this process was told to use Ray (``ex.enable("ray", address=...)``, done by the server)."""
    options = ex.options("ray")
    if options is None:
        return None
    from simpletuner_ray.executor import RayExecutor

    return RayExecutor(runner.store, on_change=runner.kick, **options)


@hookimpl
def register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    register(ExecutorSpec("ray", _ray, "Nodes of a Ray cluster; multi-node jobs gang-scheduled with a placement "
                          "group.", remote=True))
