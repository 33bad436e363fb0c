"""Thumbnails for ``GET /api/datasets/file?size=N``, made with Pillow and kept in a disk cache.

Plain synchronous code. The view renders on a small dedicated thread pool, so decoding large images never blocks
the event loop or takes more than a couple of cores, and reads cached thumbnails on the default pool, so they
never wait behind a render. Pillow is imported on first use: a server that never shows a thumbnail never loads
it. The cache key covers the file's identity and version (resolved path, ``mtime_ns``, size) and the requested
size, so an edited image gets a fresh thumbnail and stale entries are simply never read again.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

MIN_SIZE, MAX_SIZE = 16, 1024
#: Pillow's own decompression-bomb threshold: larger sources are refused rather than decoded.
MAX_SOURCE_PIXELS = 89_478_485
#: Upload kind (``uploads.EXTENSIONS``) -> the only Pillow decoder tried for it: content already sniffed as
#: a PNG is never handed to another format's parser. JPEG XL has no Pillow decoder (its files get a 415).
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF", "avif": "AVIF"}

WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


class Undecodable(Exception):
    """Pillow cannot make a thumbnail of this file (unknown format, corrupt, or too many pixels)."""


@functools.lru_cache(maxsize=1)
def output_format() -> tuple[str, str, str]:
    """(Pillow format, extension, content type): WebP when this Pillow build can write it, else PNG."""
    from PIL import features

    return ("WEBP", "webp", "image/webp") if features.check("webp") else ("PNG", "png", "image/png")


def cache_path(cache_dir: Path, source: Path, mtime_ns: int, size: int, longest: int) -> Path:
    """Where the thumbnail of this version of ``source`` at ``longest`` px lives."""
    identity = f"{source}\x00{mtime_ns}\x00{size}\x00{longest}".encode("utf-8", "surrogateescape")
    return cache_dir / f"{hashlib.sha256(identity).hexdigest()}.{output_format()[1]}"


def render(handle: BinaryIO, kind: str, longest: int) -> bytes:
    """The image in ``handle`` scaled so its longest side is at most ``longest`` px, encoded."""
    from PIL import Image, ImageOps

    decoder = PILLOW_FORMATS.get(kind)
    if decoder is None:
        raise Undecodable(f"no decoder for {kind.upper()} images")
    try:
        with Image.open(handle, formats=[decoder]) as opened:
            if opened.width * opened.height > MAX_SOURCE_PIXELS:
                raise Undecodable(f"{opened.width}x{opened.height} is too large to thumbnail")
            opened.draft("RGB", (longest, longest))  # JPEG: decode at a reduced scale (others ignore it)
            image = ImageOps.exif_transpose(opened)
            if image.mode in WIDE_MODES:  # 16-bit and float images: scaled to 8 bits (resizing needs it)
                image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
            image.thumbnail((longest, longest))
            mode = "RGBA" if image.has_transparency_data else "RGB"
            if image.mode != mode:
                image = image.convert(mode)
            out = io.BytesIO()
            image.save(out, output_format()[0], **({"quality": 85} if output_format()[0] == "WEBP" else {}))
    except Undecodable:
        raise
    except Exception as exc:  # decoders raise many kinds of errors on hostile or truncated input
        raise Undecodable(str(exc) or type(exc).__name__) from None
    return out.getvalue()


def _store(path: Path, data: bytes) -> None:
    """Write atomically (temp file + rename), so a concurrent reader never sees half a thumbnail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cached(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def make(handle: BinaryIO, kind: str, longest: int, cached: Path) -> bytes:
    """A new thumbnail, stored at ``cached``. A cache that cannot be written (read-only or full disk) only costs
    the next request another render."""
    data = render(handle, kind, longest)
    try:
        _store(cached, data)
    except OSError:
        pass
    return data
