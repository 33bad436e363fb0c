"""``/api/training``: validate and start the active environment, follow the job, send it commands.

One :class:`~simpletuner_core.jobs.runner.Runner` per app (see ``app.runner_context``) spawns trainer processes,
which outlive the server. Bodies are a form (multipart or urlencoded, as the web UI and the tutorial's curl send:
``-F --num_train_epochs=0``; keys starting with ``__`` are UI bookkeeping and ignored) or a JSON object. The
submitted ``--key`` values are merged over the active environment's config. Non-admins see and command only their
own jobs. Nothing here imports torch: the runner and config validation are torch-free.
"""

from __future__ import annotations

import asyncio
import html
import json
import weakref
from pathlib import Path
from typing import Any

from aiohttp import web

from simpletuner_core import paths
from simpletuner_core.config import environments as envs
from simpletuner_core.config.errors import ConfigInvalid
from simpletuner_core.config.migrations import overlay
from simpletuner_core.config.rules import validate, warnings_for
from simpletuner_core.data.config import load_dataloader
from simpletuner_core.data.folders import missing_folders
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.runner import Runner
from simpletuner_core.plot import job_plot_path
from simpletuner_core.plugins import get_registry
from simpletuner_server import validation as v
from simpletuner_server.api.configs_views import active_key, redact
from simpletuner_server.api.training import artifacts
from simpletuner_server.api.training.policy import HOOK_PERMISSION, PolicyError, check_job
from simpletuner_server.api.training.status import IDLE, StatusFold, status_body
from simpletuner_server.auth import current_principal, require
from simpletuner_server.keys import RUNNER_KEY, SETTINGS_KEY, STORE_KEY

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_EVENTS = 10_000
DEFAULT_EVENTS = 1_000
RESTRICTED_WEBHOOKS = "webhook_restricted"  # registered by the webhooks plugin, when installed


# --- request bodies -----------------------------------------------------------------------------------------


async def _fields(request: web.Request) -> dict[str, Any]:
    """The body as a flat dict: a form's text fields or a JSON object; empty for no body. ``__`` keys dropped."""
    if request.content_type in FORM_TYPES:
        try:
            form = await request.post()
        except ValueError as exc:  # e.g. multipart without a boundary: the client's mistake, not ours
            raise web.HTTPBadRequest(text=f"Malformed form body: {str(exc)[:200]}") from None
        raw: dict[str, Any] = {}
        for key, value in form.items():
            if not isinstance(value, str):
                raise v.InvalidRequest([{"path": key, "message": "file uploads are not accepted here"}])
            raw[key] = value
    else:
        text = (await request.read()).strip()
        if not text:
            return {}
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="Request body must be a form or a JSON object") from None
        if not isinstance(raw, dict):
            raise v.InvalidRequest([{"path": "", "message": "expected a JSON object"}])
    return {key: value for key, value in raw.items() if isinstance(key, str) and not key.startswith("__")}


def _config_keys(fields: dict[str, Any]) -> dict[str, Any]:
    """Submitted config keys in wire form (``--key``)."""
    return {key if key.startswith("--") else f"--{key}": value for key, value in fields.items()}


def _load_env(name: Any, home: Path) -> tuple[str | None, dict[str, Any]]:
    """The environment's name and config; (None, {}) when none is set or it has since been deleted."""
    if not isinstance(name, str):
        return None, {}
    try:
        paths.check_name(name)
        return name, envs.load_environment(name, home=home)["config"]
    except (ValueError, OSError, envs.EnvironmentError_):
        return None, {}


def _check(config: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """(errors, warnings) of a wire config, every error at once."""
    errors, warnings, _ = _check_with_cfg(config)
    return errors, warnings


def _check_with_cfg(config: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str], Any]:
    try:
        cfg = validate(config, get_registry())
    except ConfigInvalid as exc:
        return [e.to_dict() for e in exc.errors], [], None
    return [], warnings_for(cfg, config), cfg


def memory_plan(cfg: Any, home: Path, devices: list[Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(plan, warning): the torch-free memory plan of a valid config and a warning when it exceeds the largest
    visible GPU; (None, None) when the family describes no shapes."""
    from simpletuner_core.memory import NoPlan, fit_warning, plan_for

    try:
        plan = plan_for(cfg, get_registry(), home)
    except NoPlan:
        return None, None
    return plan.to_dict(), fit_warning(plan, devices, cfg, get_registry(), home)


async def _merged(request: web.Request) -> tuple[str | None, dict[str, Any], list[dict[str, Any]], list[str]]:
    """(active env, submitted keys, errors, warnings) for the submitted keys over the active environment."""
    submitted = _config_keys(await _fields(request))
    active = request.app[STORE_KEY].get_setting(active_key(request))
    env, base = await asyncio.to_thread(_load_env, active, request.app[SETTINGS_KEY].home)
    errors, warnings, cfg = await asyncio.to_thread(_check_with_cfg, overlay(base, submitted))
    request["config"] = cfg
    return env, submitted, errors, warnings


def _wants_html(request: web.Request) -> bool:
    return "HX-Request" in request.headers or "text/html" in request.headers.get("Accept", "")


def _fragment(valid: bool, message: str, errors: list[dict[str, Any]], warnings: list[str]) -> str:
    esc = html.escape
    kind = "success" if valid else "danger"
    parts = [f'<div class="alert alert-{kind}" role="alert"><strong>{esc(message)}</strong>']
    if errors:
        items = []
        for error in errors:
            hint = error.get("did_you_mean")
            hint_html = f" (did you mean <code>{esc(str(hint))}</code>?)" if hint else ""
            items.append(f"<li><code>{esc(str(error.get('path', '')))}</code>: "
                         f"{esc(str(error.get('message', '')))}{hint_html}</li>")
        parts.append(f'<ul class="errors">{"".join(items)}</ul>')
    if warnings:
        parts.append(f'<ul class="warnings">{"".join(f"<li>{esc(w)}</li>" for w in warnings)}</ul>')
    parts.append("</div>")
    return "".join(parts)


# --- jobs ---------------------------------------------------------------------------------------------------


def _runner(request: web.Request) -> Runner:
    return request.app[RUNNER_KEY]


def _sees(request: web.Request, job: m.Job) -> bool:
    """Admins (``*``) see every job; everyone else their own."""
    principal = current_principal(request)
    return principal.can("*") or job.user == principal.user.username


def _newest(request: web.Request, states: tuple[str, ...] | None) -> m.Job | None:
    jobs = [j for j in request.app[STORE_KEY].list_jobs(states=states) if _sees(request, j)]
    return max(jobs, key=lambda j: (j.created_at, j.id)) if jobs else None


def _current_job(request: web.Request) -> m.Job | None:
    """The newest active job, else the newest job of any state."""
    return _newest(request, m.ACTIVE_STATES) or _newest(request, None)


def _job(request: web.Request, job_id: Any) -> m.Job:
    """The given job; 404 when unknown or not the caller's."""
    if not isinstance(job_id, str) or not job_id:
        raise v.InvalidRequest([{"path": "job_id", "message": "must be a non-empty string"}])
    try:
        job = request.app[STORE_KEY].get_job(job_id)
    except m.JobError:
        job = None
    if job is None or not _sees(request, job):
        raise web.HTTPNotFound(text=f"unknown job {job_id!r}")
    return job


def chosen_job(request: web.Request) -> m.Job | None:
    """``job_id`` from the query (404 when unknown or not yours), else the caller's current job (after
    reconciling, so a trainer that died is not reported running); None when the caller has no job."""
    job_id = request.query.get("job_id")
    if job_id is not None:
        return _job(request, job_id)
    _runner(request).reconcile()
    return _current_job(request)


_PROGRESS: weakref.WeakKeyDictionary[Runner, dict[str, StatusFold]] = weakref.WeakKeyDictionary()


def _progress(request: web.Request, job_id: str) -> StatusFold:
    """The job's status fold, brought up to date with the events written since the last call."""
    cache = _PROGRESS.setdefault(_runner(request), {})
    seen = cache.setdefault(job_id, StatusFold())
    store = request.app[STORE_KEY]
    while True:
        batch = store.read_events(job_id, after_id=seen.last_id, limit=MAX_EVENTS)
        seen.feed(batch)
        if len(batch) < MAX_EVENTS:
            return seen


def _shown_config(request: web.Request, job: m.Job) -> dict[str, Any]:
    """The job's config; secret-bearing values hidden from everyone but its owner and admins."""
    principal = current_principal(request)
    if principal.can("*") or job.user == principal.user.username:
        return dict(job.config)
    return redact(dict(job.config))


# --- handlers -----------------------------------------------------------------------------------------------


@require("job.submit")
async def validate_config(request: web.Request) -> web.Response:
    """200 ``{"valid": true, ...}`` or 422 ``{"valid": false, "errors": [...]}``; an HTML fragment on request."""
    env, submitted, errors, warnings = await _merged(request)
    if not errors:  # what start would refuse for this caller is an error here too
        try:
            await enforce_policy(request, env, submitted)
        except web.HTTPForbidden as exc:
            key, _, message = (exc.text or "").partition(": ")
            errors = [{"path": key, "message": message}]
    valid = not errors
    message = "Configuration Valid" if valid else f"Configuration has {len(errors)} error(s)"
    status = 200 if valid else 422
    plan = None
    if valid and request.get("config") is not None:
        plan, warning = await asyncio.to_thread(memory_plan, request["config"], request.app[SETTINGS_KEY].home,
                                                _runner(request).devices)
        if warning:
            warnings = [*warnings, warning]
    if _wants_html(request):
        return web.Response(text=_fragment(valid, message, errors, warnings), status=status,
                            content_type="text/html")
    return web.json_response({"valid": valid, "errors": errors, "warnings": warnings, "message": message,
                              "memory_plan": plan}, status=status)


async def enforce_policy(request: web.Request, env: str | None, submitted: dict[str, Any]) -> None:
    """403 when a non-admin's job would touch paths outside the allowed roots or run host-side hooks."""
    principal = current_principal(request)
    if principal.can("*"):
        return
    settings = request.app[SETTINGS_KEY]
    _, base = await asyncio.to_thread(_load_env, env, settings.home)
    try:
        await asyncio.to_thread(check_job, overlay(base, submitted), is_admin=False,
                                can_hooks=principal.can(HOOK_PERMISSION), home=settings.home,
                                roots=settings.job_roots)
    except PolicyError as exc:
        raise web.HTTPForbidden(text=str(exc)) from None


def _missing_datasets(config: dict[str, Any], home: Path) -> list[dict[str, Any]]:
    """A ``{path, message}`` per dataset folder the job's dataloader names but the disk lacks, saying how to
    fill it, so a start fails now instead of in the trainer's preflight. An unreadable dataloader is left to
    the trainer, which reports it in full."""
    value = config.get("--data_backend_config")
    if not isinstance(value, str) or not value:
        return []
    path = envs.resolve_dataloader_path(value, home=home, cwd=home)
    try:
        datasets = load_dataloader(path, get_registry())
    except (ConfigInvalid, OSError, ValueError):
        return []
    return [{"path": f"dataloader[{index}].instance_data_dir",
             "message": f"dataset {ds.id!r}: folder {folder} does not exist; create it with POST "
                        "/api/datasets/folders (parent_path, folder_name) and fill it with POST "
                        f"/api/datasets/upload (target_path={folder}, files) or /api/datasets/upload/zip"}
            for index, ds, folder in missing_folders(datasets, path.parent)]


def job_overrides(request: web.Request) -> dict[str, Any]:
    """Keys the server sets on every job the caller submits, over whatever the config says: a non-admin's
    webhooks are restricted to public addresses, checked again when each event is sent."""
    if current_principal(request).can("*") or RESTRICTED_WEBHOOKS not in get_registry().config_fields:
        return {}
    return {f"--{RESTRICTED_WEBHOOKS}": True}


@require("job.submit")
async def start_training(request: web.Request) -> web.Response:
    """Validate, then submit to the runner: 200 running, 202 queued, 409 rejected; 403 when a non-admin's
    config reaches outside the allowed roots or asks for host-side hooks."""
    env, submitted, errors, _ = await _merged(request)
    if errors:
        raise v.InvalidRequest(errors)
    await enforce_policy(request, env, submitted)
    home = request.app[SETTINGS_KEY].home
    _, base = await asyncio.to_thread(_load_env, env, home)
    missing = await asyncio.to_thread(_missing_datasets, {**base, **submitted}, home)
    if missing:
        raise v.InvalidRequest(missing)
    user = current_principal(request).user.username
    try:
        result = await asyncio.to_thread(_runner(request).submit, env=env,
                                         config={**submitted, **job_overrides(request)}, user=user)
    except ConfigInvalid as exc:  # the environment changed under us
        raise v.InvalidRequest([e.to_dict() for e in exc.errors]) from None
    except envs.EnvironmentError_ as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    if not result.success:
        raise web.HTTPConflict(text=f"Job rejected: {result.reason}")
    return web.json_response({"success": True, "job_id": result.job_id, "status": result.status,
                              "allocated_gpus": list(result.allocated_gpus),
                              "queue_position": result.queue_position},
                             status=200 if result.status == "running" else 202)


@require("job.view.own")
async def training_status(request: web.Request) -> web.Response:
    """The current job (the newest active one, else the newest) in SimpleTuner's shape.

    ``status`` (idle, starting, running, completed, error, cancelled), ``config``, ``job_id``, ``job_info``
    (failed jobs: status, status_detail, error, message), ``progress`` (percent, step, total_steps, epoch,
    total_epochs, loss, learning_rate, metrics; null before the first step) and ``startup_progress`` (one entry
    per lifecycle stage seen). Extras: ``state`` (the job's own state), ``stage`` (the last stage event) and
    ``last_event_id``.
    """
    _runner(request).reconcile()
    job = _current_job(request)
    if job is None:
        return web.json_response(IDLE)
    fold = _progress(request, job.id)
    return web.json_response(status_body(job, fold, _shown_config(request, job)))


@require("job.view.own")
async def training_events(request: web.Request) -> web.Response:
    """Events after ``since_index`` (an event id); ``next_index`` is the id to pass next time."""
    since = v.query_int(request.query, "since_index", 0, 0, 2**62)
    limit = v.query_int(request.query, "limit", DEFAULT_EVENTS, 1, MAX_EVENTS)
    job = chosen_job(request)
    if job is None:
        return web.json_response({"job_id": None, "events": [], "next_index": since})
    events = request.app[STORE_KEY].read_events(job.id, after_id=since, limit=limit)
    return web.json_response({"job_id": job.id, "events": [e.to_dict() for e in events],
                              "next_index": events[-1].id if events else since})


async def _command(request: web.Request, command: str) -> web.Response:
    """Send ``command`` to the given job (``job_id`` in the body or query) or the active one."""
    fields = await _fields(request)
    job_id = fields.get("job_id", request.query.get("job_id"))
    runner = _runner(request)
    runner.reconcile()
    if job_id is not None:
        job = _job(request, job_id)
    else:
        wanted = (*m.ACTIVE_STATES, m.QUEUED) if command in ("stop", "cancel") else m.ACTIVE_STATES
        job = _newest(request, m.ACTIVE_STATES) or _newest(request, wanted)
        if job is None:
            raise web.HTTPBadRequest(text="No running training job")
    try:
        moved = runner.command(job.id, command)
    except m.JobError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response({"job_id": moved.id, "state": moved.state})


@require("job.cancel.own")
async def stop_training(request: web.Request) -> web.Response:
    """Graceful: the trainer finishes its step, checkpoints and ends ``stopped`` (resumable)."""
    return await _command(request, "stop")


@require("job.cancel.own")
async def cancel_training(request: web.Request) -> web.Response:
    return await _command(request, "cancel")


@require("job.cancel.own")
async def run_validation(request: web.Request) -> web.Response:
    return await _command(request, "validate")


@require("job.cancel.own")
async def run_checkpoint(request: web.Request) -> web.Response:
    return await _command(request, "checkpoint")


async def checkpoints_body(request: web.Request, job: m.Job) -> dict[str, Any]:
    """``{job_id, output_dir, checkpoints: [{step, path, size_bytes, created_at, download_url}]}``."""
    root = artifacts.output_root(job, request.app[SETTINGS_KEY].home)
    found = await asyncio.to_thread(artifacts.checkpoints, job.id, root)
    return {"job_id": job.id, "output_dir": job.output_dir or job.config.get("--output_dir"), "checkpoints": found}


@require("job.view.own")
async def list_job_checkpoints(request: web.Request) -> web.Response:
    """Complete checkpoints in the job's output directory, oldest written first, with sizes and download URLs."""
    fields = await _fields(request)
    job_id = fields.get("job_id", request.query.get("job_id"))
    job = _job(request, job_id) if job_id is not None else _current_job(request)
    if job is None:
        raise web.HTTPBadRequest(text="No training job")
    return web.json_response(await checkpoints_body(request, job))


@require("job.view.own")
async def training_plot(request: web.Request) -> web.StreamResponse:
    """The job's loss/learning-rate plot (PNG), refreshed at each checkpoint and at the end of the run."""
    job_id = request.query.get("job_id")
    job = _job(request, job_id) if job_id is not None else _current_job(request)
    if job is None:
        raise web.HTTPNotFound(text="No training job")
    path = await asyncio.to_thread(job_plot_path, request.app[STORE_KEY], job.id)
    if path is None:
        raise web.HTTPNotFound(text=f"job {job.id} has no plot yet (it is written at the first checkpoint)")
    return web.FileResponse(path, headers={"Content-Type": "image/png", "Cache-Control": "no-cache"})
