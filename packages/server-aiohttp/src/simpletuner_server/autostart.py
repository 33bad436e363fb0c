"""``simpletuner server --env NAME``: validate that environment and start it once the server is ready.

A config that does not validate stops the server before it serves anything, with the errors printed: a
scripted launch must fail loudly, not sit there idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from simpletuner_core.config import environments as envs
from simpletuner_core.config.errors import ConfigInvalid
from simpletuner_server.keys import RUNNER_KEY


class AutostartError(RuntimeError):
    """The environment given with ``--env`` is unknown, invalid or was rejected by the queue."""


def autostart(env: str, report: Callable[[str], None]) -> Callable[[web.Application], Awaitable[None]]:
    """An ``on_startup`` hook (runs after the store and runner contexts): activate ``env`` and submit it."""

    async def start(app: web.Application) -> None:
        runner = app[RUNNER_KEY]
        try:
            result = await asyncio.to_thread(runner.submit, env=env)
        except envs.EnvironmentError_ as exc:
            raise AutostartError(f"--env {env}: {exc}") from None
        except ConfigInvalid as exc:
            lines = "\n".join(f"  {e}" for e in exc.errors)
            raise AutostartError(f"--env {env}: the configuration is invalid:\n{lines}") from None
        if not result.success:
            raise AutostartError(f"--env {env}: rejected by the queue: {result.reason}")
        where = "running" if result.status == "running" else f"queued (position {result.queue_position})"
        report(f"environment {env!r}: job {result.job_id} {where}")

    return start
