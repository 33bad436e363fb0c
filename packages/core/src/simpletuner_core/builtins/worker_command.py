"""``simpletuner worker``: the remote-worker agent (see ``simpletuner_core.agent``)."""

from __future__ import annotations

from collections.abc import Callable

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import CliCommand


@hookimpl
def register_cli_commands(register: Callable[[CliCommand], None]) -> None:
    from simpletuner_core.agent import command

    register(CliCommand("worker", "Run jobs for a remote orchestrator (outbound connections only).",
                        command.add_arguments, command.run))
