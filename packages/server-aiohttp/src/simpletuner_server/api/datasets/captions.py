"""Images and their captions for the dashboard's dataset browser: listing, sniffing, atomic caption writes.

A caption is SimpleTuner's ``textfile`` convention: ``<stem>.txt`` next to the image. Plain synchronous code
(no aiohttp): the views run it in worker threads. Entries are read by name without following links out of the
root, so a symlink planted in a dataset folder cannot make the API read or list a file elsewhere.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from simpletuner_server.api.datasets.uploads import HEAD_BYTES, ContentCheck, is_inside, kind_for

MAX_CAPTION_CHARS = 10_000
CAPTION_READ_BYTES = 64 * 1024  # a caption file longer than this is shown cut (no one edits such a file here)
ALLOWED_CONTROLS = frozenset("\n\t")


def is_image_name(name: str) -> bool:
    kind = kind_for(name)
    return kind is not None and kind != "text"


def sniff_problem(kind: str, name: str, head: bytes) -> str | None:
    """The uploads' content check on a file's first bytes: why it is not the ``kind`` its name says, or None."""
    check = ContentCheck(kind, name)
    return check.feed(head[:HEAD_BYTES]) or check.finish()


def caption_problem(text: Any) -> str | None:
    """Why ``text`` cannot be stored as a caption, or None."""
    if not isinstance(text, str):
        return "must be a string"
    if len(text) > MAX_CAPTION_CHARS:
        return f"must be at most {MAX_CAPTION_CHARS} characters"
    bad = next((ch for ch in text if ch not in ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        return f"must not contain control characters (found U+{ord(bad):04X}; newlines and tabs are fine)"
    try:
        text.encode("utf-8")
    except UnicodeError:
        return "must be valid Unicode text"
    return None


def caption_path(image: Path) -> Path:
    return image.with_name(os.path.splitext(image.name)[0] + ".txt")


def _inside(path: Path, root: Path) -> bool:
    try:
        return is_inside(path.resolve(), root)
    except (OSError, RuntimeError):
        return False


def read_caption(path: Path, root: Path) -> str | None:
    """The caption file's text (at most :data:`CAPTION_READ_BYTES`), None when there is none or it is a link
    leading out of the root."""
    try:
        if not path.is_file() or not _inside(path, root):
            return None
        with open(path, "rb") as handle:
            data = handle.read(CAPTION_READ_BYTES)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace")


def list_images(folder: Path, root: Path, offset: int, limit: int) -> dict[str, Any]:
    """Images directly in ``folder`` (resolved, inside ``root``) by name, one page with their captions."""
    images = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not is_image_name(entry.name):
            continue
        try:
            if not entry.is_file() or (entry.is_symlink() and not _inside(Path(entry.path), root)):
                continue
        except OSError:
            continue
        images.append(entry)
    items = []
    for entry in images[offset:offset + limit]:
        path = Path(entry.path)
        caption_file = caption_path(path)
        caption = read_caption(caption_file, root)
        try:
            size = entry.stat().st_size
        except OSError:
            continue  # removed while listing
        items.append({"name": entry.name, "path": path.relative_to(root).as_posix(), "size": size,
                      "caption": caption,
                      "caption_path": None if caption is None else caption_file.relative_to(root).as_posix()})
    return {"items": items, "total": len(images), "offset": offset, "limit": limit}


def write_caption(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a reader (or a trainer scanning the folder) sees the old caption or the new
    one, never half of it. The temp file is hidden (dot-name), so listings skip it; a link at ``path`` is
    replaced, never followed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".caption-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the caption from a trainer run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
