"""Reading dataset request bodies: small forms whole, uploads streamed part by part into staging.

Uploads never go through ``request.post()`` (which buffers the body in memory up to ``client_max_size``):
each file part is written chunk by chunk, in a worker thread, into a temp file under the staging folder while
its size and content are checked. The whole body is metered too, since a chunked body declares no length.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
from aiohttp import BodyPartReader, web

from simpletuner_server import validation as v
from simpletuner_server.api.datasets.uploads import (
    CHUNK,
    Report,
    StagedFile,
    UploadLimits,
    kind_for,
    name_problem,
    unsupported,
)

T = TypeVar("T")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def _disk(func: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(func, *args)


async def small_fields(request: web.Request) -> dict[str, str]:
    """Text fields of a small form (multipart or urlencoded) or a JSON object; extra fields are ignored (curl
    forms may carry them), non-text values dropped."""
    if request.content_type in FORM_TYPES:
        try:
            raw: Any = dict(await request.post())
        except ValueError as exc:  # a malformed form (no boundary, bad encoding)
            raise web.HTTPBadRequest(text=f"Malformed form body: {exc}") from None
    else:
        try:
            raw = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="Request body must be a form or a JSON object") from None
        if not isinstance(raw, dict):
            raise v.InvalidRequest([{"path": "", "message": "expected a JSON object"}])
    return {key: value for key, value in raw.items() if isinstance(value, str)}


class Budget:
    """Bytes read from one upload body, checked as they arrive."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise too_large(f"Upload too large: the limit for one request is {self.limit} bytes", self.limit)


def too_large(message: str, limit: int) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(max_size=limit, text=message)


async def _text(part: BodyPartReader, budget: Budget, limits: UploadLimits) -> str:
    data = b""
    while chunk := await part.read_chunk(CHUNK):
        budget.take(len(chunk))
        data += chunk
        if len(data) > limits.max_field_chars * 4:
            raise v.InvalidRequest([{"path": part.name or "", "message": "is too long"}])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise v.InvalidRequest([{"path": part.name or "", "message": "must be UTF-8 text"}]) from None


async def _drain(part: BodyPartReader, budget: Budget) -> None:
    while chunk := await part.read_chunk(CHUNK):
        budget.take(len(chunk))


async def _stage(part: BodyPartReader, staging: Path, name: str, kind: str, max_bytes: int,
                 budget: Budget) -> StagedFile:
    """Stream one file part into staging; a problem (size, content) stops writing but the part is drained."""
    staged = await _disk(StagedFile, staging, name, kind, max_bytes)
    try:
        while chunk := await part.read_chunk(CHUNK):
            budget.take(len(chunk))
            if staged.problem is None:
                await _disk(staged.write, chunk)
        await _disk(staged.finish)
    except BaseException:
        await _disk(staged.discard)
        raise
    return staged


@attrs.define
class Upload:
    """One parsed upload body: its text fields, the files staged so far, and the files refused."""

    staging: Path
    limits: UploadLimits
    budget: Budget
    fields: dict[str, str] = attrs.field(factory=dict)
    files: list[StagedFile] = attrs.field(factory=list)
    report: Report = attrs.field(factory=Report)

    async def add_dataset_file(self, part: BodyPartReader, name: str) -> None:
        if len(self.files) + len(self.report.errors) >= self.limits.max_files:
            raise too_large(f"Too many files in one request (limit {self.limits.max_files})", self.limits.max_files)
        problem, kind = name_problem(name), kind_for(name)
        duplicate = any(f.name == name for f in self.files)
        if problem or kind is None or duplicate:
            if problem or duplicate:
                self.report.refuse(name, f"Invalid filename: {problem}" if problem else "Sent twice in one request")
            else:
                self.report.refuse(name, unsupported(name), 415)
            await _drain(part, self.budget)
            return
        staged = await _stage(part, self.staging, name, kind, self.limits.max_file_bytes, self.budget)
        if staged.problem:
            self.report.refuse(name, staged.problem, staged.problem_status)
        else:
            self.files.append(staged)

    async def add_zip(self, part: BodyPartReader, name: str) -> None:
        if self.files:
            raise v.InvalidRequest([{"path": part.name or "file", "message": "send one zip file per request"}])
        self.files.append(await _stage(part, self.staging, name, "zip", self.limits.max_request_bytes, self.budget))


async def read_upload(request: web.Request, staging: Path, limits: UploadLimits, file_fields: tuple[str, ...],
                      zip_mode: bool = False) -> Upload:
    """Walk the body once: text fields collected, file parts under ``file_fields`` staged or refused. Text
    fields may come before or after the files. A form or JSON without files is read for its fields only."""
    upload = Upload(staging, limits, Budget(limits.max_request_bytes))
    if request.content_type in ("application/x-www-form-urlencoded", "application/json"):
        upload.fields = await small_fields(request)  # no files: the caller names what is missing
        return upload
    if request.content_type != "multipart/form-data":
        raise web.HTTPUnsupportedMediaType(text="Uploads must be sent as multipart/form-data")
    if request.content_length is not None and request.content_length > limits.max_request_bytes:
        raise too_large(f"Upload too large: the limit for one request is {limits.max_request_bytes} bytes",
                        limits.max_request_bytes)  # refused before reading anything
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise web.HTTPBadRequest(text="Nested multipart bodies are not supported")
            if part.filename is None:
                upload.fields[part.name or ""] = await _text(part, upload.budget, limits)
            elif part.name not in file_fields or not part.filename:
                await _drain(part, upload.budget)  # an extra file field, or a browser's empty file input
            elif zip_mode:
                await upload.add_zip(part, part.filename)
            else:
                await upload.add_dataset_file(part, part.filename)
    except ValueError as exc:  # aiohttp's complaints about a malformed multipart body
        raise web.HTTPBadRequest(text=f"Malformed multipart body: {exc}") from None
    except ConnectionError:  # the client went away mid-upload; the staging folder is removed by the caller
        raise web.HTTPBadRequest(text="Upload interrupted") from None
    return upload
