"""The ``webhooks`` plugin: an event sink active when the config sets ``webhook_config``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from simpletuner_core import hookimpl
from simpletuner_core.records import EventSinkSpec


def make_sink(config: Any, job_dir: Path | str | None = None) -> Any:
    """A sink for the job's ``webhook_config``, or None when none is configured.

    Invalid configs raise ValueError here, at job start, rather than failing silently mid-training.
    """
    value = getattr(config, "webhook_config", None)
    if not value:
        return None
    from simpletuner_webhooks.config import parse_webhook_config
    from simpletuner_webhooks.sink import FanoutSink, RawWebhookSink

    job_id = Path(job_dir).name if job_dir else None
    sinks = [RawWebhookSink.from_target(t, job_id=job_id) for t in parse_webhook_config(value)]
    return sinks[0] if len(sinks) == 1 else FanoutSink(sinks)


@hookimpl
def register_event_sinks(register: Callable[[EventSinkSpec], None]) -> None:
    """Contribute the ``webhook`` sink."""
    register(
        EventSinkSpec(name="webhook", factory=make_sink, description="POST events as JSON to webhook URLs.")
    )
