"""``/api/datasets``: dataset folders, file and zip uploads, and listings under ``settings.datasets_dir``.

Every path a client sends (absolute, or relative to the datasets root) must resolve, symlinks followed, inside
the root: else 403. The root is created on the first write. Uploads stream part by part into a hidden staging
folder under the root (never through ``request.post()``, which would buffer the body), are checked by content
as they arrive, and are only then moved into place, so a refused request leaves nothing behind and an existing
file is replaced only when the client sends ``overwrite=true``. Messages name paths relative to the root.

A top-level folder created through the API belongs to its creator: only they (and admins) write into it.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
from aiohttp import web

from simpletuner_server import validation as v
from simpletuner_server.api.datasets.bodies import read_upload, small_fields, too_large
from simpletuner_server.api.datasets.listing import list_datasets, list_files
from simpletuner_server.api.datasets.uploads import (
    Refused,
    Report,
    UploadLimits,
    extract_zip,
    is_inside,
    make_staging,
    name_problem,
    place_reported,
)
from simpletuner_server.api_spec import BINARY, BOOLEAN, STRING, Form, Query, accepts
from simpletuner_server.auth import current_principal, require
from simpletuner_server.keys import SETTINGS_KEY, STORE_KEY
from simpletuner_server.routes_types import Route

T = TypeVar("T")

#: Set before startup to change the upload limits (tests do); otherwise read from the settings when they
#: carry ``max_upload_bytes`` / ``max_upload_file_bytes`` / ``max_extracted_bytes``, else the defaults.
UPLOAD_LIMITS_KEY: web.AppKey[UploadLimits] = web.AppKey("upload_limits", UploadLimits)
SETTINGS_LIMITS = {"max_upload_bytes": "max_request_bytes", "max_upload_file_bytes": "max_file_bytes",
                   "max_extracted_bytes": "max_extracted_bytes"}
FILE_FIELDS = ("files", "files[]", "file")
ZIP_FIELDS = ("file", "zip")
MAX_PATH_CHARS = 4096

PATH_SCHEMA = {"type": "string", "description": "absolute (inside datasets_dir) or relative to it"}
FOLDER_FORM = Form({"parent_path": PATH_SCHEMA, "folder_name": STRING}, required=("parent_path", "folder_name"),
                   multipart=False)
UPLOAD_FORM = Form({"target_path": PATH_SCHEMA, "files[]": {"type": "array", "items": BINARY},
                    "files": {"type": "array", "items": BINARY}, "overwrite": BOOLEAN}, required=("target_path",))
ZIP_FORM = Form({"target_path": PATH_SCHEMA, "file": BINARY, "overwrite": BOOLEAN},
                required=("target_path", "file"))
FILES_QUERY = Query({"path": PATH_SCHEMA, "offset": {"type": "integer", "minimum": 0},
                     "limit": {"type": "integer", "minimum": 1, "maximum": 10_000}})


def upload_limits(app: web.Application) -> UploadLimits:
    if UPLOAD_LIMITS_KEY in app:
        return app[UPLOAD_LIMITS_KEY]
    settings = app[SETTINGS_KEY]
    return UploadLimits(**{ours: getattr(settings, theirs) for theirs, ours in SETTINGS_LIMITS.items()})


def streams_body(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an upload route: ``body_limit_middleware`` applies ``handler.body_limit(app)`` instead of the
    app-wide ``max_body_bytes``; the handler enforces its own limit as it streams."""
    handler.body_limit = lambda app: upload_limits(app).max_request_bytes  # type: ignore[attr-defined]
    return handler


async def _disk(func: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(func, *args)


# --- ownership ----------------------------------------------------------------------------------------------

OWNER_PREFIX = "dataset_owner:"


def _top(root: Root, path: Path) -> str | None:
    """The top-level dataset folder ``path`` lies in (None for the root itself)."""
    rel = root.relative(path)
    return None if rel == "." else rel.split("/", 1)[0]


def _check_owner(request: web.Request, root: Root, path: Path, field: str) -> None:
    """Writes go only into top-level folders the caller created through the API (admins: anywhere). Folders
    made outside the API have no owner, so only admins may write into them or into the root itself."""
    principal = current_principal(request)
    if principal.can("*"):
        return
    top = _top(root, path)
    owner = request.app[STORE_KEY].get_setting(OWNER_PREFIX + top) if top else None
    if owner != principal.user.username:
        holder = "another user" if owner else "no owner"
        whose = "the datasets root" if top is None else f"dataset folder {top!r} ({holder})"
        raise web.HTTPForbidden(text=f"{field}: {whose} is not yours to write to; create your own folder with "
                                     "POST /api/datasets/folders (admins may write anywhere)")


# --- paths --------------------------------------------------------------------------------------------------


@attrs.frozen
class Root:
    shown: Path  # as configured (made absolute): what clients are told
    real: Path  # symlinks resolved: what containment is checked against

    def relative(self, path: Path) -> str:
        return path.relative_to(self.real).as_posix() or "."

    def absolute(self, path: Path) -> str:
        rel = self.relative(path)
        return str(self.shown if rel == "." else self.shown / rel)


def _root(request: web.Request, create: bool) -> Root:
    shown = request.app[SETTINGS_KEY].datasets_dir.absolute()
    if create:
        shown.mkdir(parents=True, exist_ok=True)
    return Root(shown, shown.resolve())


def _resolve(root: Root, raw: str, field: str) -> Path:
    """``raw`` (absolute, or relative to the root) resolved; 403 naming ``field`` when it leaves the root."""
    if len(raw) > MAX_PATH_CHARS or "\x00" in raw or not raw.isprintable():
        raise v.InvalidRequest([{"path": field, "message": "must be a printable path of at most "
                                                           f"{MAX_PATH_CHARS} characters"}])
    try:
        raw.encode("utf-8")
        given = Path(raw)
        candidate = (given if given.is_absolute() else root.real / given).resolve()  # follows a linked root too
    except (UnicodeError, OSError, RuntimeError):  # lone surrogates, a name too long, a symlink loop
        raise v.InvalidRequest([{"path": field, "message": "is not a usable path"}]) from None
    if not is_inside(candidate, root.real):
        raise web.HTTPForbidden(text=f"Access denied: {field} is outside the configured datasets directory "
                                     f"(GET /api/datasets/root shows it)")
    return candidate


def _existing_folder(root: Root, raw: str, field: str) -> Path:
    path = _resolve(root, raw, field)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError:
        raise v.InvalidRequest([{"path": field, "message": "is not a usable path"}]) from None
    if not exists:
        raise web.HTTPNotFound(text=f"{field} {root.relative(path)!r} does not exist under the datasets "
                                    f"directory; create it with POST /api/datasets/folders")
    if not is_dir:
        raise v.InvalidRequest([{"path": field, "message": f"{root.relative(path)!r} is not a folder"}])
    return path


def _require(fields: dict[str, str], form: Form) -> None:
    missing = [{"path": name, "message": "is required"} for name in form.required if not fields.get(name)]
    if missing:
        raise v.InvalidRequest(missing)


def _answer(report: Report, root: Root, target: Path, count_key: str) -> web.Response:
    """200 with the summary, or (nothing written and something refused) the error envelope plus it."""
    status = report.status()
    body: dict[str, Any] = {
        "success": status == 200, count_key: len(report.written), "files_skipped": len(report.skipped),
        "files": report.written, "skipped": report.skipped, "errors": report.errors,
        "target_path": root.absolute(target), "relative_path": root.relative(target),
    }
    if status != 200:
        first = report.errors[0]
        body["error"] = {"status": status, "message": f"No file was written: {first['file']}: {first['message']}"
                         + (f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""),
                         "errors": report.errors}
    return web.json_response(body, status=status)


# --- handlers -----------------------------------------------------------------------------------------------


@accepts(tag="datasets")
@require("dataset.view")
async def datasets_root(request: web.Request) -> web.Response:
    """The datasets root (``datasets_dir``): every dataset path is inside it."""
    root = _root(request, create=False)
    return web.json_response({"datasets_dir": str(root.shown), "exists": root.shown.is_dir()})


@accepts(tag="datasets")
@require("dataset.view")
async def list_folders(request: web.Request) -> web.Response:
    """Top-level dataset folders with recursive image, caption and other file counts."""
    root = _root(request, create=False)
    datasets = await _disk(list_datasets, root.real) if root.shown.is_dir() else []
    return web.json_response({"datasets_dir": str(root.shown), "datasets": datasets, "count": len(datasets)})


@accepts(query=FILES_QUERY, tag="datasets")
@require("dataset.view")
async def folder_files(request: web.Request) -> web.Response:
    """One folder's subfolders and a page of its files (name, size, kind), by name."""
    root = _root(request, create=False)
    numbers = v.query_ints(request.query, {"offset": (0, 10**9, 0), "limit": (1, 10_000, 1000)})
    folder = await _disk(_existing_folder, root, request.query.get("path") or ".", "path")
    listing = await _disk(list_files, folder, numbers["offset"], numbers["limit"])
    return web.json_response({"path": root.relative(folder), **listing})


@accepts(form=FOLDER_FORM, tag="datasets")
@require("dataset.upload")
async def create_folder(request: web.Request) -> web.Response:
    """Create a folder under ``parent_path`` (absolute inside the root, or relative to it); 409 if it exists."""
    fields = await small_fields(request)
    _require(fields, FOLDER_FORM)
    name = fields["folder_name"]
    problem = name_problem(name)
    if problem:
        raise v.InvalidRequest([{"path": "folder_name", "message": f"Folder name {problem}"}])
    root = await _disk(_root, request, True)
    parent = await _disk(_existing_folder, root, fields["parent_path"], "parent_path")
    folder = parent / name
    if parent != root.real:
        _check_owner(request, root, parent, "parent_path")
    try:
        await _disk(folder.mkdir)
    except FileExistsError:
        raise web.HTTPConflict(text=f"Folder {root.relative(folder)!r} already exists") from None
    if parent == root.real:  # a new top-level dataset: its creator owns it
        request.app[STORE_KEY].set_setting(OWNER_PREFIX + name, current_principal(request).user.username)
    return web.json_response({"success": True, "path": root.absolute(folder), "name": name,
                              "relative_path": root.relative(folder)}, status=201)


@asynccontextmanager
async def _staging(request: web.Request) -> AsyncIterator[tuple[Root, Path]]:
    """The root (created if missing) and a private staging folder under it, removed whatever happens."""
    root = await _disk(_root, request, True)
    staging = await _disk(make_staging, root.real)
    try:
        yield root, staging
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise web.HTTPInsufficientStorage(text="No space left in the datasets directory") from None
    finally:
        await _disk(shutil.rmtree, staging, True)


@streams_body
@accepts(form=UPLOAD_FORM, tag="datasets")
@require("dataset.upload")
async def upload_files(request: web.Request) -> web.Response:
    """Upload images and caption/metadata files into ``target_path``.

    Files are checked by content; an existing file is kept unless ``overwrite=true``. 200 when anything was
    written or nothing refused (per-file problems in ``errors``), else 413/415/422 with the same body.
    """
    async with _staging(request) as (root, staging):
        upload = await read_upload(request, staging, upload_limits(request.app), FILE_FIELDS)
        _require(upload.fields, UPLOAD_FORM)
        overwrite = v.flag(upload.fields, "overwrite")
        report = upload.report
        if not upload.files and not report.errors:
            raise v.InvalidRequest([{"path": "files[]", "message": "at least one file is required"}])
        target = await _disk(_existing_folder, root, upload.fields["target_path"], "target_path")
        _check_owner(request, root, target, "target_path")
        for file in upload.files:
            outcome = await _disk(place_reported, file.path, target / file.name, overwrite)
            report.add(file.name, outcome)
        return _answer(report, root, target, "files_uploaded")


@streams_body
@accepts(form=ZIP_FORM, tag="datasets")
@require("dataset.upload")
async def upload_zip(request: web.Request) -> web.Response:
    """Upload a zip and extract its images and caption/metadata files into ``target_path``, folders kept.

    Unsafe entries (absolute, ``..``, links) are refused one by one; an archive past the size, entry-count or
    compression-ratio limits is refused whole (413) before anything is written.
    """
    async with _staging(request) as (root, staging):
        limits = upload_limits(request.app)
        upload = await read_upload(request, staging, limits, ZIP_FIELDS, zip_mode=True)
        _require({**upload.fields, **({"file": "sent"} if upload.files else {})}, ZIP_FORM)
        overwrite = v.flag(upload.fields, "overwrite")
        target = await _disk(_existing_folder, root, upload.fields["target_path"], "target_path")
        _check_owner(request, root, target, "target_path")
        archive = upload.files[0]
        try:
            if archive.problem:
                raise Refused(415, "The uploaded file is not a valid ZIP archive")
            report = await _disk(extract_zip, archive.path, target, root.real, staging, limits, overwrite)
        except Refused as exc:
            if exc.status == 413:
                raise too_large(exc.message, limits.max_extracted_bytes) from None
            raise REFUSALS[exc.status](text=exc.message) from None
        return _answer(report, root, target, "files_extracted")


REFUSALS: dict[int, type[web.HTTPException]] = {415: web.HTTPUnsupportedMediaType, 422: web.HTTPUnprocessableEntity}

DATASET_ROUTES: tuple[Route, ...] = (
    ("GET", "/api/datasets", list_folders),
    ("GET", "/api/datasets/folders", list_folders),
    ("POST", "/api/datasets/folders", create_folder),
    ("GET", "/api/datasets/root", datasets_root),
    ("GET", "/api/datasets/files", folder_files),
    ("POST", "/api/datasets/upload", upload_files),
    ("POST", "/api/datasets/upload/zip", upload_zip),
)
"""URL table, kept apart from the handlers so the whole API surface is readable in one place."""
