"""Commands to a running trainer (stop, cancel, validate now, checkpoint now) and the signals that send them.

Commands are applied after the next gradient sync, never mid micro-batch. The job runner (a later issue) sets the
same flags from the store; in CLI mode SIGINT/SIGTERM set ``stop`` and a second signal sets ``cancel``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import attrs


@attrs.define
class Control:
    stop: bool = False  # finish the step, checkpoint, exit
    cancel: bool = False  # exit now without saving
    validate: bool = False
    checkpoint: bool = False
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def take(self) -> dict[str, bool]:
        """Read every flag; the one-shot ones (validate, checkpoint) reset."""
        with self.lock:
            out = {"stop": self.stop, "cancel": self.cancel, "validate": self.validate, "checkpoint": self.checkpoint}
            self.validate = self.checkpoint = False
            return out


@contextlib.contextmanager
def signals_to(control: Control) -> Iterator[None]:
    """While training, SIGINT/SIGTERM ask for a graceful stop; a second one cancels."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        with control.lock:
            if control.stop:
                control.cancel = True
            control.stop = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
