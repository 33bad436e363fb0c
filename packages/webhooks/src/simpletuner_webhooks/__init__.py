"""simpletuner-webhooks: deliver trainer events to HTTP receivers (stdlib only, torch-free)."""

from __future__ import annotations

from simpletuner_webhooks.config import SUPPORTED_TYPES, WebhookTarget, parse_webhook_config
from simpletuner_webhooks.discord import DiscordWebhookSink
from simpletuner_webhooks.sink import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    FanoutSink,
    RawWebhookSink,
    WebhookSink,
    signature,
)

__version__ = "0.1.0"
__all__ = [
    "SIGNATURE_HEADER",
    "SUPPORTED_TYPES",
    "TIMESTAMP_HEADER",
    "DiscordWebhookSink",
    "FanoutSink",
    "RawWebhookSink",
    "WebhookSink",
    "WebhookTarget",
    "__version__",
    "parse_webhook_config",
    "signature",
]
