"""simpletuner-webhooks: deliver trainer events to HTTP receivers (stdlib only, torch-free)."""

from __future__ import annotations

from simpletuner_webhooks.config import SUPPORTED_TYPES, WebhookTarget, parse_webhook_config
from simpletuner_webhooks.sink import FanoutSink, RawWebhookSink

__version__ = "0.1.0"
__all__ = [
    "SUPPORTED_TYPES",
    "FanoutSink",
    "RawWebhookSink",
    "WebhookTarget",
    "__version__",
    "parse_webhook_config",
]
