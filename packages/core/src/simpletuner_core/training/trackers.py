"""Experiment trackers (``report_to``) that can never stop a run.

A tracker whose package is missing, or that fails to start (no credentials, no network), is dropped with one
warning event and training goes on, as SimpleTuner does; validation only warns about it (``warnings_for``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simpletuner_core.config.rules import missing_tracker


def log_with(report_to: str) -> str | None:
    """What to hand ``Accelerator(log_with=...)``: None for ``none`` or a tracker that is not installed."""
    if report_to == "none" or missing_tracker(report_to):
        return None
    return report_to


def start(accelerator: Any, report_to: str, project: str, config: dict[str, Any], run_name: str,
          warn: Callable[[str], None]) -> bool:
    """Start the trackers; on any failure warn once, detach them and return False (the run goes on)."""
    if report_to == "none":
        return False
    package = missing_tracker(report_to)
    if package:
        warn(f"report_to={report_to}: the `{package}` package is not installed (pip install {package}); "
             "continuing without that tracker")
        return False
    try:
        accelerator.init_trackers(project, config=config, init_kwargs={"wandb": {"name": run_name}})
    except Exception as exc:  # credentials, network, a tracker's own bug: never the run's problem
        accelerator.trackers = []
        warn(f"report_to={report_to}: could not start the tracker ({type(exc).__name__}: {str(exc)[:300]}); "
             "continuing without it")
        return False
    return True
