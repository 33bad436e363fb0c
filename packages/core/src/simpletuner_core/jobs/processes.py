"""Process identity that survives PID reuse: a PID plus the process's start time (Linux ``/proc``)."""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return raw[raw.rfind(")") + 2:].split()


def start_time(pid: int) -> float | None:
    """Seconds since boot at which ``pid`` started, or None when there is no such process."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return int(fields[19]) / _CLOCK_TICKS  # field 22 of /proc/<pid>/stat, counted from field 3


def is_alive(pid: int | None, started: float | None) -> bool:
    """True when ``pid`` runs and is the same process that started at ``started`` (not a reused PID, no zombie)."""
    if not pid:
        return False
    fields = _stat_fields(pid)
    if fields is None:
        if Path("/proc").is_dir():
            return False
        try:  # no /proc (macOS): best effort
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return False
    return started is None or abs(int(fields[19]) / _CLOCK_TICKS - started) < 0.05
