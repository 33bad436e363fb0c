"""Built-in event sink: the console progress bar (off with SIMPLETUNER_PROGRESS=0)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import EventSinkSpec


def _console(config: Any, job_dir: Path) -> Any:
    if os.environ.get("SIMPLETUNER_PROGRESS", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    from simpletuner_core.events.progress import ProgressPrinter

    return ProgressPrinter()


@hookimpl
def register_event_sinks(register: Callable[[EventSinkSpec], None]) -> None:
    register(EventSinkSpec("console", _console, "Progress bar and stage lines on stderr."))
