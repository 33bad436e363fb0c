"""Lifecycle stages of a run, reported with SimpleTuner's ``lifecycle.stage`` keys: ``running``, then
``completed``, or ``failed`` when the stage raises.

``stages.begin(key, message)`` opens a stage that lasts until the next ``begin`` or ``close`` (the startup
stages follow one another, so their call sites stay one line); ``with stages.scoped(key, message):`` wraps one
block instead (a checkpoint save, which may happen while ``training_abort`` is open). ``with stages:`` around the
whole run closes the open stage, as ``failed`` if the run raised.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.events.wire import STAGE_LABELS


class Stage:
    """One stage; ``running`` is emitted on creation, the end on :meth:`end` (once)."""

    def __init__(self, owner: Stages, key: str, message: str, meta: dict[str, Any]) -> None:
        self.owner, self.key, self.message, self.meta = owner, key, message, meta
        self.done = False
        owner._emit(self, "running")

    def end(self, status: str = "completed", **extra: Any) -> None:
        if not self.done:
            self.done = True
            self.owner._emit(self, status, **extra)
        if self.owner.open is self:
            self.owner.open = None

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        status, extra = _outcome(kind, exc)
        self.end(status, **extra)


class Stages:
    """The run's stages on ``emitter`` as ``job.stage`` events ``{stage, status, label, message, ...}``."""

    def __init__(self, emitter: EventEmitter) -> None:
        self.events = emitter
        self.open: Stage | None = None

    def begin(self, key: str, message: str, **meta: Any) -> Stage:
        """Close the open stage and start ``key``, which stays open until the next ``begin`` or ``close``."""
        self.close()
        stage = Stage(self, key, message, meta)
        self.open = stage
        return stage

    def scoped(self, key: str, message: str, **meta: Any) -> Stage:
        """Start ``key`` for one ``with`` block, leaving the open stage open."""
        return Stage(self, key, message, meta)

    def close(self, status: str = "completed", **extra: Any) -> None:
        if self.open is not None:
            self.open.end(status, **extra)

    def _emit(self, stage: Stage, status: str, **extra: Any) -> None:
        level = "error" if status == "failed" else "info"
        self.events.emit("job.stage", level=level, stage=stage.key, status=status,
                         label=STAGE_LABELS.get(stage.key, stage.key), message=stage.message, **stage.meta, **extra)

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        status, extra = _outcome(kind, exc)
        self.close(status, **extra)


def _outcome(kind: type[BaseException] | None, exc: BaseException | None) -> tuple[str, dict[str, Any]]:
    """How a ``with`` block ends a stage: ``completed``, or ``failed`` with the exception as ``error``."""
    return ("failed", {"error": f"{kind.__name__}: {exc}"}) if kind else ("completed", {})
