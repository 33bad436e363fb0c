"""Console progress bar fed by events: step/total, loss, it/s, ETA. Torch-free."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from simpletuner_core.events.types import Event


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressPrinter:
    """An event sink that draws a one-line bar on a TTY and prints a line per ~10% otherwise."""

    def __init__(self, stream: TextIO | None = None, width: int = 24, min_interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_decile = -1
        self._open_line = False

    def line(self, data: dict) -> str:
        step, total = int(data.get("step", 0)), int(data.get("total", 0)) or 1
        filled = int(self.width * min(step, total) / total)
        bar = "#" * filled + "-" * (self.width - filled)
        loss = data.get("loss")
        loss_text = f"{loss:.4f}" if isinstance(loss, (int, float)) else "-"
        rate = float(data.get("rate") or 0.0)
        return (f"step {step}/{total} [{bar}] loss {loss_text} {rate:.2f} it/s "
                f"ETA {format_eta(data.get('eta_seconds'))}")

    def emit(self, event: Event) -> None:
        if event.type == "training.status":
            self._status(event.data)
            return
        self._end_line()
        if event.type == "job.stage":
            status = event.data.get("status", "running")
            if status == "running":
                self.stream.write(f"[{event.data.get('stage')}] {event.data.get('message', '')}\n")
            elif status == "failed":
                self.stream.write(f"[{event.data.get('stage')}] failed: {event.data.get('error', '')}\n")
        elif event.type == "job.running":
            self.stream.write(f"[training] {event.data.get('message', '')}\n")
        elif event.type == "checkpoint.saved":
            self.stream.write(f"checkpoint saved at step {event.data.get('step')}: {event.data.get('path')}\n")
        elif event.type == "validation.image":
            if event.data.get("validation_type") == "intermediary":
                return  # previews are for dashboards, not the console
            self.stream.write(f"validation image (step {event.data.get('step')}): {event.data.get('path')}\n")
        elif event.type == "publish.completed":
            self.stream.write(f"published {event.data.get('kind')} to {event.data.get('remote')}\n")
        elif event.type in ("hook.script", "publish.failed") and event.level == "warning":
            self.stream.write(f"warning: {event.data.get('message')}\n")
        elif event.type in ("job.failed", "job.completed", "job.stopped", "job.cancelled"):
            self.stream.write(f"{event.type}: {event.data}\n")
        elif event.type == "log" and event.level in ("warning", "error"):
            self.stream.write(f"{event.level}: {event.data.get('message')}\n")
        self.stream.flush()

    def _status(self, data: dict) -> None:
        now = time.monotonic()
        step, total = int(data.get("step", 0)), int(data.get("total", 0)) or 1
        last = step >= total
        if self.tty:
            if last or now - self._last_draw >= self.min_interval:
                self.stream.write("\r" + self.line(data))
                self._open_line = True
                self._last_draw = now
        else:
            decile = step * 10 // total
            if decile != self._last_decile or last:
                self._last_decile = decile
                self.stream.write(self.line(data) + "\n")
        if last:
            self._end_line()
        self.stream.flush()

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False

    def close(self) -> None:
        self._end_line()
