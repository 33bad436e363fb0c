"""``GET /api/training/metrics``: a job's loss / learning-rate curve and evaluation metrics, ready to chart.

Built from the job's ``training.status`` events (``step``, ``loss``, ``lr``, extracted by SQLite with
``Store.read_event_fields``) and ``training.metric`` events, so other events are never decoded. A long run is decimated server-side into
``max_points`` buckets (step and lr: the bucket's last; loss: its mean), so a dashboard first-renders a 100k-step
run from one small answer; the last bucket ends with the newest point, so the curve always reaches the current step.
The undecimated points of recently charted jobs stay in memory (``folds``), so a reload reads only newer events.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Sequence
from typing import Any

import attrs
from aiohttp import web

from simpletuner_core.events.wire import metric_values
from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import Store
from simpletuner_server import validation as v
from simpletuner_server.api.training import views as tv
from simpletuner_server.api.training.folds import JobFolds, events_between
from simpletuner_server.api_spec import STRING, Query, accepts
from simpletuner_server.auth import require
from simpletuner_server.keys import STORE_KEY

DEFAULT_POINTS, MAX_POINTS = 1000, 10_000
METRICS_QUERY = Query({"job_id": STRING,
                       "max_points": {"type": "integer", "minimum": 1, "maximum": MAX_POINTS,
                                      "default": DEFAULT_POINTS}})


def _number(value: Any) -> float | int | None:
    """Finite numbers only: NaN or infinity would make the answer invalid JSON for browsers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _mean(values: Sequence[float | int | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def buckets(count: int, wanted: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges splitting ``count`` points into ``min(count, wanted)`` contiguous, non-empty buckets
    whose sizes differ by at most one; the last ends at ``count``."""
    wanted = min(count, wanted)
    return [(i * count // wanted, (i + 1) * count // wanted) for i in range(wanted)]


@attrs.define
class Curves:
    """A job's points in event order, before decimation, up to event ``last_id``."""

    last_id: int = 0
    step: list[Any] = attrs.field(factory=list)
    loss: list[float | int | None] = attrs.field(factory=list)
    lr: list[float | int | None] = attrs.field(factory=list)
    metrics: dict[str, tuple[list[Any], list[float | int]]] = attrs.field(factory=dict)

    def load(self, store: Store, job_id: str, after_id: int, upto_id: int) -> None:
        """Status points as three numbers each, extracted by SQLite (a 10,000-step run's cold read was
        dominated by decoding whole payloads); the few metric events in full."""
        steps, losses, lrs = self.step, self.loss, self.lr
        for _, raw_step, loss, lr in store.read_event_fields(job_id, "training.status", ("step", "loss", "lr"),
                                                             after_id=after_id, upto_id=upto_id):
            step = _number(raw_step)
            if step is not None:
                steps.append(step)
                losses.append(_number(loss))
                lrs.append(_number(lr))
        for event in events_between(store, job_id, ("training.metric",), after_id, upto_id):
            data = event.data
            step = _number(data.get("step"))
            if step is None:
                continue
            for name, raw in metric_values(data).items():
                value = _number(raw)
                if value is not None:
                    series = self.metrics.setdefault(name, ([], []))
                    series[0].append(step)
                    series[1].append(value)

    def body(self, max_points: int) -> dict[str, Any]:
        ranges = buckets(len(self.step), max_points)
        series = {"step": [self.step[hi - 1] for _, hi in ranges],
                  "loss": [_mean(self.loss[lo:hi]) for lo, hi in ranges],
                  "lr": [self.lr[hi - 1] for _, hi in ranges]}
        metrics = {}
        for name, (steps, values) in self.metrics.items():
            spans = buckets(len(steps), max_points)
            metrics[name] = {"step": [steps[hi - 1] for _, hi in spans],
                             "value": [_mean(values[lo:hi]) for lo, hi in spans]}
        return {"total_points": len(self.step), "series": series, "metrics": metrics}


_FOLDS: weakref.WeakKeyDictionary[Runner, JobFolds[Curves]] = weakref.WeakKeyDictionary()


@accepts(query=METRICS_QUERY)
@require("job.view.own")
async def training_metrics(request: web.Request) -> web.Response:
    """Loss, learning-rate and evaluation-metric series of a job, at most ``max_points`` points each.

    The job is ``job_id``, else your current one. ``{"job_id", "last_event_id", "total_points", "series":
    {"step", "loss", "lr"}, "metrics": {name: {"step", "value"}}}``; ``total_points`` counts the status points
    before decimation.
    """
    max_points = v.query_int(request.query, "max_points", DEFAULT_POINTS, 1, MAX_POINTS)
    job = tv.chosen_job(request)
    if job is None:
        return web.json_response({"job_id": None, "last_event_id": 0, **Curves().body(max_points)})
    folds = _FOLDS.setdefault(tv._runner(request), JobFolds(Curves))
    last, body = await asyncio.to_thread(folds.read, request.app[STORE_KEY], job.id,
                                         lambda curves: curves.body(max_points))
    return web.json_response({"job_id": job.id, "last_event_id": last, **body})
