"""``/ui/static/{path}``: the dashboard's assets from the package, gzip-compressed once and kept in memory.

A few hundred KB in all, so compressing each file once (on first request) and serving the bytes from memory
is cheaper than a file read plus compression per request, and keeps the job page's transfer small.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import mimetypes
import re
from importlib import resources
from pathlib import Path

import attrs
from aiohttp import web

STATIC_DIR = Path(str(resources.files("simpletuner_server.ui").joinpath("static")))
VERSION_SEGMENT = re.compile(r"v[0-9][0-9A-Za-z.+-]*")  # as render.static writes it; never a folder name
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon", ".json": "application/json", ".txt": "text/plain", ".md": "text/plain"}


@attrs.frozen
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


@functools.cache
def _load(relative: str) -> Asset | None:
    root = STATIC_DIR.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    body = path.read_bytes()
    kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Asset(body, gzip.compress(body, 9, mtime=0), kind, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


async def serve(request: web.Request) -> web.StreamResponse:
    """A static asset; long cache (page URLs carry a ``v<version>/`` segment), ETag, gzip when accepted."""
    relative = request.match_info["path"]
    first, _, rest = relative.partition("/")
    if rest and VERSION_SEGMENT.fullmatch(first):
        relative = rest  # /ui/static/v0.1.0/js/job.js -> js/job.js (any version: a stale page still loads)
    asset = _load(relative)
    if asset is None:
        raise web.HTTPNotFound(text="No such asset")
    headers = {"Cache-Control": "public, max-age=86400", "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("Accept-Encoding", "") and len(asset.gzipped) < len(body):
        body, headers["Content-Encoding"] = asset.gzipped, "gzip"
    charset = "utf-8" if asset.content_type.startswith(("text/", "application/json", "image/svg")) else None
    return web.Response(body=body, content_type=asset.content_type, charset=charset, headers=headers)
