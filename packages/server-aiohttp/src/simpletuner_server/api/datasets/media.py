"""``/api/datasets/file``, ``/images``, ``/caption``: what a dataset browser needs to show and caption images.

Paths are confined to the datasets root exactly as in :mod:`.views` (same resolver, same 403), and writes follow
its folder-ownership rule. A file is opened once and then only used through that handle (its type sniffed, its
bytes streamed or thumbnailed), so a name swapped on disk mid-request cannot change what is served. Types come
from the content, as for uploads: a text file named ``x.png`` is never served as an image.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import attrs
from aiohttp import web

from simpletuner_server import validation as v
from simpletuner_server.api.datasets import captions, thumbs
from simpletuner_server.api.datasets.uploads import CHUNK, HEAD_BYTES, kind_for
from simpletuner_server.api.datasets.views import (
    MAX_PATH_CHARS,
    PATH_SCHEMA,
    Root,
    _check_owner,
    _existing_folder,
    _resolve,
    _root,
)
from simpletuner_server.api_spec import Query, accepts
from simpletuner_server.auth import require
from simpletuner_server.keys import SETTINGS_KEY
from simpletuner_server.routes_types import Route

IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "bmp": "image/bmp",
               "tiff": "image/tiff", "avif": "image/avif", "jxl": "image/jxl"}
TEXT_TYPE = "text/plain; charset=utf-8"
IMAGE_CACHING = {"Cache-Control": "private, max-age=300"}
MAX_PAGE = 1000
#: Never through a link swapped in after resolving; never wait on a FIFO planted in a dataset folder.
NO_FOLLOW_NO_WAIT = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
#: Thumbnails decode whole images: at most two at once, off the default pool the other handlers share.
THUMB_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="thumbnails")

FILE_QUERY = Query({"path": PATH_SCHEMA, "size": {"type": "integer", "minimum": thumbs.MIN_SIZE,
                                                  "maximum": thumbs.MAX_SIZE}}, required=("path",))
IMAGES_QUERY = Query({"path": PATH_SCHEMA, "offset": {"type": "integer", "minimum": 0},
                      "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}})


@v.check({"type": "string", "minLength": 1, "maxLength": MAX_PATH_CHARS, **PATH_SCHEMA})
def _path_field(value: Any) -> str | None:
    ok = isinstance(value, str) and 0 < len(value) <= MAX_PATH_CHARS
    return None if ok else f"must be a path of 1-{MAX_PATH_CHARS} characters"


@v.check({"type": "string", "maxLength": captions.MAX_CAPTION_CHARS})
def _caption_field(value: Any) -> str | None:
    return captions.caption_problem(value)


CAPTION_BODY = v.Body({"path": _path_field, "caption": _caption_field}, required=("path", "caption"))


@attrs.frozen
class Opened:
    """A dataset file opened for reading, with what was learnt from its handle."""

    handle: BinaryIO
    path: Path  # resolved
    kind: str  # an image kind of ``uploads.EXTENSIONS``, or "text"
    size: int
    mtime_ns: int


def _not_found(root: Root, path: Path) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=f"path {root.relative(path)!r} does not exist under the datasets directory")


def _open(root: Root, raw: str) -> Opened:
    """Open ``raw`` (inside the root) as a served dataset file: 403 outside, 404 missing, 422 a folder or
    unusable name, 415 a type this route does not serve or an image whose bytes are not that image."""
    path = _resolve(root, raw, "path")
    try:
        fd = os.open(path, os.O_RDONLY | NO_FOLLOW_NO_WAIT)
    except FileNotFoundError:
        raise _not_found(root, path) from None
    except OSError as exc:
        if exc.errno == errno.EACCES:
            raise web.HTTPForbidden(text=f"path {root.relative(path)!r} is not readable by the server") from None
        raise v.InvalidRequest([{"path": "path", "message": "is not a usable path"}]) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        what = "is a folder" if stat.S_ISDIR(info.st_mode) else "is not a regular file"
        raise v.InvalidRequest([{"path": "path", "message": f"{root.relative(path)!r} {what}"}])
    handle = os.fdopen(fd, "rb")
    try:
        kind = kind_for(path.name)
        if kind is None:
            raise web.HTTPUnsupportedMediaType(text=f"{path.name}: not an image or caption/metadata file")
        if kind != "text":
            problem = captions.sniff_problem(kind, path.name, handle.read(HEAD_BYTES))
            if problem:
                raise web.HTTPUnsupportedMediaType(text=problem)
            handle.seek(0)
        return Opened(handle, path, kind, info.st_size, info.st_mtime_ns)
    except BaseException:
        handle.close()
        raise


async def _stream(request: web.Request, opened: Opened, headers: dict[str, str]) -> web.StreamResponse:
    """Send the open file in chunks read on a worker thread; the handle is closed whatever happens."""
    response = web.StreamResponse(headers=headers)
    response.content_length = opened.size
    try:
        await response.prepare(request)
        remaining = opened.size
        while remaining > 0:
            chunk = await asyncio.to_thread(opened.handle.read, min(CHUNK, remaining))
            if not chunk:
                break  # the file shrank meanwhile; the client sees a short body
            remaining -= len(chunk)
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        await asyncio.to_thread(opened.handle.close)
    return response


async def _thumbnail(request: web.Request, opened: Opened, longest: int) -> web.Response:
    cache_dir = request.app[SETTINGS_KEY].home / "cache" / "thumbs"

    def lookup() -> tuple[Path, bytes | None]:
        cached = thumbs.cache_path(cache_dir, opened.path, opened.mtime_ns, opened.size, longest)
        return cached, thumbs.read_cached(cached)

    try:
        cached, data = await asyncio.to_thread(lookup)
        if data is None:
            data = await asyncio.get_running_loop().run_in_executor(
                THUMB_POOL, thumbs.make, opened.handle, opened.kind, longest, cached)
    except thumbs.Undecodable as exc:
        raise web.HTTPUnsupportedMediaType(text=f"{opened.path.name}: cannot make a thumbnail ({exc})") from None
    finally:
        await asyncio.to_thread(opened.handle.close)
    return web.Response(body=data, content_type=thumbs.output_format()[2], headers=IMAGE_CACHING)


@accepts(query=FILE_QUERY, tag="datasets")
@require("dataset.view")
async def dataset_file(request: web.Request) -> web.StreamResponse:
    """One file under the datasets root: an image (or its thumbnail with ``size``), or a caption/metadata text.

    Images are recognised by their content, as uploads are; ``size`` (16-1024) answers a WebP (or PNG)
    thumbnail whose longest side is at most that many pixels, cached on disk. Anything else: 415.
    """
    raw = v.required(request.query, "path")
    size = v.query_ints(request.query, {"size": (thumbs.MIN_SIZE, thumbs.MAX_SIZE, None)})["size"]
    opened = await asyncio.to_thread(_open, _root(request, create=False), raw)
    if opened.kind == "text":
        if size is not None:
            await asyncio.to_thread(opened.handle.close)
            raise web.HTTPUnsupportedMediaType(text=f"{opened.path.name}: thumbnails are made of images only")
        return await _stream(request, opened, {"Content-Type": TEXT_TYPE})
    if size is not None:
        return await _thumbnail(request, opened, size)
    return await _stream(request, opened, {"Content-Type": IMAGE_TYPES[opened.kind], **IMAGE_CACHING})


@accepts(query=IMAGES_QUERY, tag="datasets")
@require("dataset.view")
async def folder_images(request: web.Request) -> web.Response:
    """A page of the images directly in one folder, by name, each with its ``<stem>.txt`` caption (or null)."""
    numbers = v.query_ints(request.query, {"offset": (0, 10**9, 0), "limit": (1, MAX_PAGE, 200)})
    root = _root(request, create=False)
    folder = await asyncio.to_thread(_existing_folder, root, request.query.get("path") or ".", "path")
    listing = await asyncio.to_thread(captions.list_images, folder, root.real, numbers["offset"], numbers["limit"])
    return web.json_response({"path": root.relative(folder), **listing})


def _caption_target(root: Root, raw: str) -> tuple[Path, Path]:
    """The image at ``raw`` and its caption file: 403 outside the root, 404 missing, 422 not an image."""
    try:
        opened = _open(root, raw)
    except web.HTTPUnsupportedMediaType as exc:
        raise v.InvalidRequest([{"path": "path", "message": f"is not an image ({exc.text})"}]) from None
    opened.handle.close()
    if opened.kind == "text":
        raise v.InvalidRequest([{"path": "path", "message": "is not an image (a caption is written next to "
                                                            "its image: send the image's path)"}])
    return opened.path, captions.caption_path(opened.path)


@accepts(body=CAPTION_BODY, tag="datasets")
@require("dataset.upload")
async def put_caption(request: web.Request) -> web.Response:
    """Write an image's caption (``<stem>.txt`` beside it), replacing any previous one atomically.

    Only the owner of the image's top-level dataset folder, or an admin, may (the uploads' rule).
    """
    body = await v.read_json(request, CAPTION_BODY)
    root = _root(request, create=False)
    image, target = await asyncio.to_thread(_caption_target, root, body["path"])
    _check_owner(request, root, image, "path")
    try:
        await asyncio.to_thread(captions.write_caption, target, body["caption"])
    except IsADirectoryError:
        raise web.HTTPConflict(text=f"{root.relative(target)!r} is a folder, not a caption file") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise web.HTTPInsufficientStorage(text="No space left in the datasets directory") from None
        raise web.HTTPConflict(text=f"Cannot write {root.relative(target)!r}: {exc.strerror or exc}") from None
    return web.json_response({"path": root.relative(image), "caption_path": root.relative(target),
                              "caption": body["caption"]})


MEDIA_ROUTES: tuple[Route, ...] = (
    ("GET", "/api/datasets/file", dataset_file),
    ("GET", "/api/datasets/images", folder_images),
    ("PUT", "/api/datasets/caption", put_caption),
)
