"""File-level rules for dataset uploads: names, allowed types (sniffed, not trusted from the extension),
size limits, staging and no-clobber placement, and zip extraction without zip-slip or zip bombs.

Plain synchronous code (no aiohttp): the views run it in worker threads and map :class:`Refused` to HTTP.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

KiB, MiB, GiB = 1024, 1024**2, 1024**3
CHUNK = 256 * KiB
STAGING_PREFIX = ".upload-"  # hidden: listings skip dot-names, and so does a trainer's file discovery
STALE_STAGING_SECONDS = 24 * 3600
MAX_NAME_BYTES = 255  # the common file-system limit for one path component
MAX_ZIP_DEPTH = 32
FORBIDDEN_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')  # control characters, and what Windows refuses
IGNORED_ZIP_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})

#: Extension → content kind. Images are checked by their magic bytes, text must be UTF-8 without NULs.
EXTENSIONS: dict[str, str] = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".bmp": "bmp", ".tif": "tiff",
    ".tiff": "tiff", ".avif": "avif", ".jxl": "jxl",
    ".txt": "text", ".json": "text", ".jsonl": "text", ".csv": "text",
}
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8\xff",), "bmp": (b"BM",),
    "tiff": (b"II*\x00", b"MM\x00*"), "jxl": (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n"),
    "zip": (b"PK\x03\x04", b"PK\x05\x06"),
}
HEAD_BYTES = 16
EXISTS = "already exists (send overwrite=true to replace it)"


@attrs.frozen
class UploadLimits:
    """Per-request ceilings. Defaults suit a local dataset push; tests and operators lower them."""

    max_request_bytes: int = 4 * GiB  # one upload body: all its files, or the zip
    max_file_bytes: int = 1 * GiB  # one uploaded file or one extracted zip entry
    max_files: int = 10_000  # file parts in one request
    max_zip_entries: int = 100_000
    max_extracted_bytes: int = 16 * GiB  # sum of a zip's uncompressed sizes
    max_zip_ratio: int = 200  # uncompressed / compressed, checked for entries above ratio_floor_bytes
    ratio_floor_bytes: int = 1 * MiB
    max_field_chars: int = 4096  # text fields (target_path, overwrite)


class Refused(Exception):
    """A whole request refused for a reason the client can fix; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@attrs.define
class Report:
    """What happened to each file of one request: written, skipped (benign), or refused (``errors``)."""

    written: list[str] = attrs.field(factory=list)
    skipped: list[dict[str, str]] = attrs.field(factory=list)
    errors: list[dict[str, str]] = attrs.field(factory=list)
    statuses: set[int] = attrs.field(factory=set)  # the HTTP status each refusal alone would earn

    def add(self, name: str, outcome: str | None) -> None:
        """Record a :func:`place_reported` outcome: None written, else why not."""
        if outcome is None:
            self.written.append(name)
        elif outcome == EXISTS:
            self.skip(name, outcome)
        else:
            self.refuse(name, outcome, 422)

    def skip(self, name: str, message: str) -> None:
        self.skipped.append({"file": name, "message": message})

    def refuse(self, name: str, message: str, status: int = 422) -> None:
        """``status``: 413 too large, 415 a refused type or content, 422 anything else (names, paths)."""
        self.errors.append({"file": name, "message": message})
        self.statuses.add(status)

    def status(self) -> int:
        """200 when anything was written or nothing was refused; else the status the refusals point to."""
        if self.written or not self.errors:
            return 200
        return next(iter(self.statuses)) if len(self.statuses) == 1 else 422


# --- names and paths ----------------------------------------------------------------------------------------


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one path component we create, or None. Refuses rather than "cleans" a name,
    so what lands on disk is exactly what the client asked for."""
    if not name:
        return "must not be empty"
    if any(part in (".", "..") for part in re.split(r"[\\/]", name)):
        return "contains path traversal sequences"
    if "/" in name or "\\" in name:
        return "cannot contain path separators"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeError:
        return "contains characters that are not valid UTF-8"
    if FORBIDDEN_CHARS.search(name) or not name.isprintable():
        return "contains forbidden characters (control characters or <>:\"|?*)"
    if name.startswith("."):
        return "must not start with a dot (hidden files are not dataset content)"
    if name != name.strip():
        return "must not start or end with whitespace"
    if size > MAX_NAME_BYTES:
        return f"is too long (at most {MAX_NAME_BYTES} bytes)"
    return None


def is_inside(path: Path, root: Path) -> bool:
    """Both already resolved."""
    return path == root or root in path.parents


def kind_for(name: str) -> str | None:
    return EXTENSIONS.get(PurePosixPath(name).suffix.lower())


def unsupported(name: str) -> str:
    allowed = ", ".join(sorted(EXTENSIONS))
    return f"Unsupported file type: {name} (allowed: {allowed})"


# --- content checks -----------------------------------------------------------------------------------------


def _head_matches(kind: str, head: bytes) -> bool:
    if kind == "webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if kind == "avif":
        return head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis")
    return head.startswith(SIGNATURES[kind])


class ContentCheck:
    """Fed a file's bytes in order; ``feed``/``finish`` return a message as soon as the content is not what the
    extension promised (a shell script named ``x.png``, a binary named ``x.txt``)."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        self.head = b""
        self.head_ok = kind == "text"
        self.decoder = codecs.getincrementaldecoder("utf-8")() if kind == "text" else None

    def _mismatch(self) -> str:
        what = "UTF-8 text without NUL bytes" if self.kind == "text" else f"a {self.kind.upper()} file"
        return f"Content does not match the file type: {self.name} is not {what}"

    def feed(self, chunk: bytes) -> str | None:
        if self.decoder is not None:
            try:
                self.decoder.decode(chunk)
            except UnicodeDecodeError:
                return self._mismatch()
            return self._mismatch() if b"\x00" in chunk else None
        if not self.head_ok:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
            if len(self.head) >= HEAD_BYTES:
                if not _head_matches(self.kind, self.head):
                    return self._mismatch()
                self.head_ok = True
        return None

    def finish(self) -> str | None:
        if self.decoder is not None:
            try:
                self.decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                return self._mismatch()
            return None
        if not self.head_ok and not _head_matches(self.kind, self.head):
            return self._mismatch()
        return None


class StagedFile:
    """One incoming file written to a private temp file while its content and size are checked; nothing
    appears under its final name until :func:`place`."""

    def __init__(self, staging: Path, name: str, kind: str, max_bytes: int) -> None:
        fd, path = tempfile.mkstemp(dir=staging, prefix=".part-")
        self.path, self.file = Path(path), os.fdopen(fd, "wb")
        self.name, self.max_bytes, self.size = name, max_bytes, 0
        self.check = ContentCheck(kind, name)
        self.problem: str | None = None
        self.problem_status = 415  # 413 once the problem is the size

    def write(self, chunk: bytes) -> str | None:
        """Write one chunk; after the first problem the rest is ignored (the caller still drains it)."""
        if self.problem is None:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                self.problem, self.problem_status = f"Too large: {self.name} exceeds {self.max_bytes} bytes", 413
            else:
                self.problem = self.check.feed(chunk)
            if self.problem is None:
                self.file.write(chunk)
            else:
                self.discard()
        return self.problem

    def finish(self) -> str | None:
        if self.problem is None:
            self.problem = self.check.finish()
        if self.problem is None:
            self.file.close()
            os.chmod(self.path, 0o644)  # mkstemp's 0600 would hide the file from a trainer run as another user
        else:
            self.discard()
        return self.problem

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def place(src: Path, dest: Path, overwrite: bool) -> bool:
    """Move a staged file to ``dest`` atomically; False when ``dest`` exists and ``overwrite`` is off. The
    no-clobber case uses ``link``, which fails atomically if ``dest`` exists; ``dest`` is never followed if it
    is a symlink (``replace`` and ``link`` act on the name). ``src`` is gone afterwards either way."""
    if os.stat(src).st_dev != os.stat(dest.parent).st_dev:  # a mount inside datasets_dir: copy over first
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        src.unlink()
        src = Path(tmp)
    try:
        if overwrite:
            os.replace(src, dest)
            return True
        try:
            os.link(src, dest)
        except FileExistsError:
            return False
        except OSError as exc:  # no hard links on this file system: check, then replace (not atomic)
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(dest):
                return False
            os.replace(src, dest)
        return True
    finally:
        src.unlink(missing_ok=True)  # the staged name after a link; already gone after a replace


def place_reported(src: Path, dest: Path, overwrite: bool) -> str | None:
    """:func:`place`, as a report outcome: None when written, :data:`EXISTS`, or why it could not be written
    (a folder of that name, a permission problem). A full disk is not a per-file problem: it propagates."""
    try:
        if place(src, dest, overwrite):
            return None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        return f"Cannot write it: {exc.strerror or exc}"
    finally:
        src.unlink(missing_ok=True)
    return EXISTS


def make_staging(root: Path) -> Path:
    """A private staging folder under the datasets root (same file system as the targets, so placing is a
    rename); stale ones left by a crash are swept first."""
    now = time.time()
    for entry in os.scandir(root):
        try:
            stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_STAGING_SECONDS
        except OSError:
            continue
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False) and stale:
            shutil.rmtree(entry.path, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=STAGING_PREFIX))


def make_dirs(base: Path, parts: tuple[str, ...], root: Path) -> Path:
    """``base/parts…`` created one level at a time, never through a symlink that leaves ``root``."""
    current = base
    for part in parts:
        current = current / part
        if current.is_symlink():
            if not is_inside(current.resolve(), root):
                raise ValueError("a folder on the way is a link outside the datasets directory")
        elif not current.exists():
            current.mkdir()
        if not current.is_dir():
            raise ValueError(f"{part!r} exists and is not a folder")
    return current


# --- zip archives -------------------------------------------------------------------------------------------


def _entry_parts(info: zipfile.ZipInfo) -> tuple[str, ...] | str:
    """The entry's path components, or why it must not be extracted."""
    raw = info.filename
    if "\x00" in raw:
        return "Invalid entry name: contains a NUL byte"
    if "\\" in raw:
        return "Invalid entry name: contains a backslash"
    if raw.startswith("/") or re.match(r"[A-Za-z]:", raw):
        return "Invalid entry name: absolute path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "Symbolic links are not extracted"
    if info.flag_bits & 0x1:
        return "Encrypted entries are not supported"
    parts = tuple(p for p in raw.split("/") if p)
    if any(p in (".", "..") for p in parts):
        return "Invalid entry name: contains path traversal sequences"
    if not parts or len(parts) > MAX_ZIP_DEPTH:
        return "Invalid entry name: empty or nested too deep"
    return parts


def _check_archive(infos: list[zipfile.ZipInfo], limits: UploadLimits) -> None:
    """Bomb checks on the declared sizes. They are binding: zipfile stops reading an entry at its declared
    ``file_size`` and a larger stream fails the CRC check, so an entry cannot inflate past what it declares."""
    if len(infos) > limits.max_zip_entries:
        raise Refused(413, f"Archive has {len(infos)} entries; the limit is {limits.max_zip_entries}")
    total = sum(info.file_size for info in infos)
    if total > limits.max_extracted_bytes:
        raise Refused(413, f"Archive expands to {total} bytes; the limit is {limits.max_extracted_bytes}")
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_floor_bytes and ratio > limits.max_zip_ratio:
            raise Refused(413, f"Archive entry {info.filename!r} has a compression ratio of {ratio:.0f}:1 "
                               f"(limit {limits.max_zip_ratio}:1); refusing a likely zip bomb")


def _chunks(source: Any) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        yield chunk


def _extract_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, kind: str, staging: Path,
                   limits: UploadLimits) -> StagedFile:
    staged = StagedFile(staging, info.filename, kind, limits.max_file_bytes)
    try:
        with archive.open(info) as source:
            for chunk in _chunks(source):
                if staged.write(chunk):
                    return staged
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, ValueError) as exc:
        staged.discard()
        staged.problem, staged.problem_status = f"Cannot read entry: {exc}", 422
        return staged
    staged.finish()
    return staged


def extract_zip(archive_path: Path, target: Path, root: Path, staging: Path, limits: UploadLimits,
                overwrite: bool) -> Report:
    """Extract the allowed entries of a zip into ``target`` (folders kept), reporting each other entry.
    ``target`` and ``root`` are resolved; whole-archive problems raise :class:`Refused` before any write."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise Refused(415, "The uploaded file is not a valid ZIP archive") from None
    report = Report()
    with archive:
        infos = archive.infolist()
        _check_archive(infos, limits)
        if not any(not info.is_dir() for info in infos):
            raise Refused(422, "The archive contains no files")
        for info in infos:
            parts = _entry_parts(info)
            if isinstance(parts, str):
                report.refuse(info.filename, parts)
                continue
            if parts[0] in IGNORED_ZIP_NAMES or parts[-1] in IGNORED_ZIP_NAMES or any(
                    p.startswith(".") for p in parts):
                if not info.is_dir():
                    report.skip(info.filename, "hidden or OS metadata entry")
                continue
            problem = next((f"Invalid entry name: {part!r} {why}" for part in parts
                            if (why := name_problem(part))), None)
            if problem:
                report.refuse(info.filename, problem)
                continue
            folders = parts if info.is_dir() else parts[:-1]
            try:
                folder = make_dirs(target, folders, root)
            except (ValueError, OSError) as exc:
                report.refuse(info.filename, f"Cannot create its folder: {exc}")
                continue
            if info.is_dir():
                continue
            kind = kind_for(parts[-1])
            if kind is None:
                report.refuse(info.filename, unsupported(info.filename), 415)
                continue
            staged = _extract_entry(archive, info, kind, staging, limits)
            if staged.problem:
                report.refuse(info.filename, staged.problem, staged.problem_status)
            else:
                report.add("/".join(parts), place_reported(staged.path, folder / parts[-1], overwrite))
    return report
