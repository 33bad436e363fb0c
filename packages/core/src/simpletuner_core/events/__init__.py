"""Typed, versioned trainer events and the sinks that receive them."""

from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.events.log import JsonlEventLog
from simpletuner_core.events.types import EVENT_SCHEMA_VERSION, EVENT_TYPES, Event

__all__ = ["EVENT_SCHEMA_VERSION", "EVENT_TYPES", "Event", "EventEmitter", "JsonlEventLog"]
