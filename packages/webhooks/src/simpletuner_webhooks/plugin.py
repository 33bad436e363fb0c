"""The ``webhooks`` plugin: event sinks active when the config sets ``webhook_config``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from simpletuner_core import hookimpl
from simpletuner_core.records import ConfigField, EventSinkSpec

#: Set by the server on jobs non-admins submit; a user may set it, never clear it (the server overrides).
RESTRICTED_FIELD = "webhook_restricted"


def make_sink(config: Any, job_dir: Path | str | None = None) -> Any:
    """A sink for the job's ``webhook_config`` (one per target), or None when none is configured.

    Invalid configs raise ValueError here, at job start, rather than failing silently mid-training.
    """
    value = getattr(config, "webhook_config", None)
    if not value:
        return None
    from simpletuner_webhooks.config import parse_webhook_config
    from simpletuner_webhooks.discord import DiscordWebhookSink
    from simpletuner_webhooks.sink import FanoutSink, RawWebhookSink

    kinds = {"raw": RawWebhookSink, "discord": DiscordWebhookSink}
    job_id = Path(job_dir).name if job_dir else None
    interval = getattr(config, "webhook_reporting_interval", None)
    restricted = bool(getattr(config, RESTRICTED_FIELD, False))
    sinks = [kinds[t.webhook_type].from_target(t, job_id=job_id, reporting_interval=interval, restricted=restricted)
             for t in parse_webhook_config(value)]
    return sinks[0] if len(sinks) == 1 else FanoutSink(sinks)


@hookimpl
def register_event_sinks(register: Callable[[EventSinkSpec], None]) -> None:
    """Contribute the ``webhook`` sink (``raw`` JSON and ``discord`` targets)."""
    register(EventSinkSpec(name="webhook", factory=make_sink,
                           description="POST events to webhook URLs (raw JSON or Discord messages)."))


@hookimpl
def register_config_fields(register: Callable[[ConfigField], None]) -> None:
    """``webhook_restricted``: the job's webhooks may reach public addresses only (plus
    ``SIMPLETUNER_WEBHOOK_ALLOW``), checked at send time."""
    register(ConfigField(RESTRICTED_FIELD, bool, False,
                         "Webhooks may reach public addresses only, plus hosts/networks in "
                         "SIMPLETUNER_WEBHOOK_ALLOW (the server sets it on jobs submitted by non-admins)."))
