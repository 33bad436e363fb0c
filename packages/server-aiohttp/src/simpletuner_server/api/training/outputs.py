"""A job's outputs over HTTP: validation images, files of its output directory, checkpoints as zips.

Everything is served from the job's output directory only (``artifacts.resolve_in``) and only to who may see the
job (404 otherwise, as for every job route). Validation images are listed by their files, never by the inline
data URLs their events carry (those are for live previews and are large).
"""

from __future__ import annotations

import asyncio
import errno
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import Store
from simpletuner_server import validation as v
from simpletuner_server.api.training import artifacts as art
from simpletuner_server.api.training import views as tv
from simpletuner_server.api.training.folds import JobFolds, events_between
from simpletuner_server.api_spec import STRING, Query, accepts
from simpletuner_server.auth import iso, require
from simpletuner_server.keys import SETTINGS_KEY, STORE_KEY

JOB_QUERY = Query({"job_id": STRING})
FILE_QUERY = Query({"job_id": STRING, "path": STRING}, required=("job_id", "path"))
DOWNLOAD_QUERY = Query({"job_id": STRING, "step": {"type": "integer", "minimum": 0}}, required=("job_id", "step"))
MAX_PATH_CHARS = 4096
#: Where checkpoint zips are spooled under the server's home until sent.
SPOOL_DIR = ".downloads"


def _root(request: web.Request, job: m.Job) -> Path | None:
    return art.output_root(job, request.app[SETTINGS_KEY].home)


# --- validation images --------------------------------------------------------------------------------------


@attrs.define
class FinalImages:
    """The final validation images a job's events reported with a file, without their inline data URLs."""

    last_id: int = 0
    found: list[dict[str, Any]] = attrs.field(factory=list)

    def load(self, store: Store, job_id: str, after_id: int, upto_id: int) -> None:
        for event in events_between(store, job_id, ("validation.image",), after_id, upto_id):
            data = event.data
            if data.get("validation_type") == "final" and isinstance(data.get("path"), str):
                self.found.append({"event_id": event.id, "step": data.get("global_step", data.get("step")),
                                   "prompt_name": data.get("prompt_name"), "prompt": data.get("prompt"),
                                   "validation_type": "final", "resolution": data.get("resolution"),
                                   "path": data["path"], "timestamp": iso(event.timestamp)})

    def listing(self, job_id: str, root: Path | None, home: Path) -> dict[str, Any]:
        """The route's answer; images outside ``root`` (checked now: links may have changed) are left out."""
        images = []
        for found in self.found if root is not None else []:
            url = art.relative_url(job_id, root, home, found["path"])
            if url is not None:
                images.append({**{key: value for key, value in found.items() if key != "path"}, "url": url})
        prompts = list(dict.fromkeys(i["prompt_name"] for i in images if i["prompt_name"] is not None))
        steps = sorted({i["step"] for i in images if isinstance(i["step"], int)})
        return {"job_id": job_id, "images": images, "prompts": prompts, "steps": steps}


_IMAGES: weakref.WeakKeyDictionary[Runner, JobFolds[FinalImages]] = weakref.WeakKeyDictionary()


@accepts(query=JOB_QUERY)
@require("job.view.own")
async def validation_images(request: web.Request) -> web.Response:
    """Final validation images of a job (by default your current one), with the URL of each file.

    ``{"job_id", "images": [{event_id, step, prompt_name, prompt, validation_type, resolution, url, timestamp}],
    "prompts": [names, first seen first], "steps": [sorted]}``. Previews (inline only) and images saved outside
    the output directory are left out.
    """
    job = tv.chosen_job(request)
    if job is None:
        return web.json_response({"job_id": None, "images": [], "prompts": [], "steps": []})
    folds = _IMAGES.setdefault(tv._runner(request), JobFolds(FinalImages))
    root, home = _root(request, job), request.app[SETTINGS_KEY].home
    _, body = await asyncio.to_thread(folds.read, request.app[STORE_KEY], job.id,
                                      lambda fold: fold.listing(job.id, root, home))
    return web.json_response(body)


# --- files --------------------------------------------------------------------------------------------------


def _forbidden(field: str, message: str) -> web.HTTPForbidden:
    exc = web.HTTPForbidden(text=f"{field}: {message}")
    exc.errors = [{"path": field, "message": message}]  # type: ignore[attr-defined]  # read by error_middleware
    return exc


def _file_in(root: Path, rel: str) -> Path:
    """The regular file ``rel`` names inside ``root``; 403 / 404 / 422 as the route documents."""
    if len(rel) > MAX_PATH_CHARS:
        raise v.InvalidRequest([{"path": "path", "message": f"must be at most {MAX_PATH_CHARS} characters"}])
    try:
        _, path = art.resolve_in(root, rel)
    except art.OutsideOutput:
        raise _forbidden("path", "resolves outside the job's output directory") from None
    except (ValueError, OSError):
        raise v.InvalidRequest([{"path": "path", "message": "is not a usable path"}]) from None
    try:
        if path.is_dir():
            raise v.InvalidRequest([{"path": "path", "message": "is a directory, not a file"}])
        if not path.is_file():
            raise web.HTTPNotFound(text=f"path: no such file {rel!r} in the job's output directory")
    except OSError:  # a name too long for the filesystem
        raise web.HTTPNotFound(text=f"path: no such file {rel!r} in the job's output directory") from None
    return path


def attachment(name: str) -> str:
    """``Content-Disposition`` for a download; a name that is not plain ASCII also goes as ``filename*``
    (RFC 6266) next to an ASCII stand-in."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    header = f'attachment; filename="{fallback}"'
    return header if fallback == name else f"{header}; filename*=UTF-8''{quote(name, safe='')}"


@accepts(query=FILE_QUERY)
@require("job.view.own")
async def job_file(request: web.Request) -> web.StreamResponse:
    """A file inside a job's output directory, images inline and anything else as a download.

    ``path`` is relative to the output directory; symlinks are followed and must stay inside it (else 403).
    """
    job = tv._job(request, v.required(request.query, "job_id"))
    rel = v.required(request.query, "path")
    root = _root(request, job)
    if root is None:
        raise web.HTTPNotFound(text=f"job {job.id} has no output directory")
    path = await asyncio.to_thread(_file_in, root, rel)
    image_type = art.IMAGE_TYPES.get(path.suffix.lower())
    if image_type is not None:
        headers = {"Content-Type": image_type, "Cache-Control": "no-cache"}
    else:
        headers = {"Content-Type": "application/octet-stream", "Content-Disposition": attachment(path.name)}
    return web.FileResponse(path, headers=headers)


# --- checkpoints --------------------------------------------------------------------------------------------


@accepts(query=JOB_QUERY)
@require("job.view.own")
async def get_checkpoints(request: web.Request) -> web.Response:
    """Complete checkpoints of a job (by default your current one) with their sizes and download URLs."""
    job = tv.chosen_job(request)
    if job is None:
        raise web.HTTPBadRequest(text="No training job")
    return web.json_response(await tv.checkpoints_body(request, job))


@accepts(query=DOWNLOAD_QUERY)
@require("job.view.own")
async def download_checkpoint(request: web.Request) -> web.StreamResponse:
    """One checkpoint directory as a zip download, named ``<job_id>-checkpoint-<step>.zip``.

    Written on a worker thread to a temporary file under the server's home, sent, then deleted.
    """
    job = tv._job(request, v.required(request.query, "job_id"))
    v.required(request.query, "step")
    step = v.query_int(request.query, "step", 0, 0, 2**62)
    directory = await asyncio.to_thread(art.find_checkpoint, _root(request, job), step)
    if directory is None:
        raise web.HTTPNotFound(text=f"step: job {job.id} has no complete checkpoint at step {step}")
    spool = request.app[SETTINGS_KEY].home / SPOOL_DIR
    try:
        archive = await asyncio.to_thread(art.zip_checkpoint, directory, spool)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise web.HTTPInsufficientStorage(text="Not enough disk space to build the zip") from None
        raise
    return _SentOnce(archive, headers={"Content-Type": "application/zip",
                                       "Content-Disposition": attachment(f"{job.id}-checkpoint-{step}.zip")})


class _SentOnce(web.FileResponse):
    """A temporary file deleted as soon as it has been sent (or failed to be)."""

    def __init__(self, path: Path, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers)
        self.temporary = path

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await super().prepare(request)  # sends the whole file
        finally:
            self.temporary.unlink(missing_ok=True)
