"""A tiny, learnable image+caption dataset written with PIL alone (tutorial, smoke tests, offline demos).

Flat colours and simple shapes named in the caption: a small model learns the pairing within a few hundred steps,
so a falling denoising loss is a meaningful check. Output is deterministic, and files already holding the right
bytes are left alone (mtimes unchanged), so caches keyed on content stay warm across calls.
"""

from __future__ import annotations

import io
from pathlib import Path

COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 40, 40)),
    ("blue", (40, 80, 220)),
    ("green", (40, 170, 70)),
    ("yellow", (240, 210, 40)),
    ("white", (245, 245, 245)),
    ("black", (20, 20, 20)),
)
SHAPES = ("square", "circle", "triangle")


def demo_item(index: int) -> tuple[str, str, str]:
    """``(shape, foreground, background)`` for image ``index``; foreground and background always differ."""
    shape = SHAPES[index % len(SHAPES)]
    n = len(COLOURS)
    fg = (index // len(SHAPES)) % n
    bg = (fg + 1 + (index // (len(SHAPES) * n)) % (n - 1)) % n
    return shape, COLOURS[fg][0], COLOURS[bg][0]


def demo_caption(index: int) -> str:
    shape, fg, bg = demo_item(index)
    return f"a {fg} {shape} on a {bg} background"


def render_demo_image(index: int, size: int = 64) -> bytes:
    """PNG bytes of image ``index``; the shape is centred, a little smaller on later cycles so no two repeat."""
    from PIL import Image, ImageDraw

    shape, fg, bg = demo_item(index)
    rgb = dict(COLOURS)
    img = Image.new("RGB", (size, size), rgb[bg])
    draw = ImageDraw.Draw(img)
    cycle = index // (len(SHAPES) * len(COLOURS) * (len(COLOURS) - 1))
    half = max(2, int(size * (0.32 - 0.03 * (cycle % 5))))
    c = size // 2
    box = (c - half, c - half, c + half - 1, c + half - 1)
    if shape == "square":
        draw.rectangle(box, fill=rgb[fg])
    elif shape == "circle":
        draw.ellipse(box, fill=rgb[fg])
    else:
        draw.polygon([(c, c - half), (c + half - 1, c + half - 1), (c - half, c + half - 1)], fill=rgb[fg])
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_demo_dataset(directory: Path, count: int = 12, size: int = 64) -> list[Path]:
    """Write ``demo_000.png`` + ``demo_000.txt`` … into ``directory``; returns the image paths."""
    if count < 1 or size < 8:
        raise ValueError(f"need count >= 1 and size >= 8, got count={count}, size={size}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = directory / f"demo_{i:03d}.png"
        _write_if_changed(image, render_demo_image(i, size))
        _write_if_changed(image.with_suffix(".txt"), (demo_caption(i) + "\n").encode("utf-8"))
        paths.append(image)
    return paths


def _edit_colour(index: int) -> str:
    """The colour image ``index``'s shape is recoloured to in the edit pair (never its fore- or background)."""
    _, fg, bg = demo_item(index)
    names = [name for name, _ in COLOURS if name not in (fg, bg)]
    return names[index % len(names)]


def render_edit_image(index: int, size: int = 64) -> bytes:
    """The edited version of :func:`render_demo_image`: same layout, shape recoloured."""
    from PIL import Image

    base = Image.open(io.BytesIO(render_demo_image(index, size))).convert("RGB")
    _, fg, _ = demo_item(index)
    rgb = dict(COLOURS)
    src, dst = rgb[fg], rgb[_edit_colour(index)]
    base.putdata([dst if px == src else px for px in base.getdata()])
    out = io.BytesIO()
    base.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def write_demo_pairs(edit_dir: Path, reference_dir: Path, count: int = 12, size: int = 64) -> list[Path]:
    """Edit/reference pairs for Kontext-style training: ``reference_dir/pair_000.png`` is the original,
    ``edit_dir/pair_000.png`` the edited target with its instruction in ``pair_000.txt`` (same file names)."""
    if count < 1 or size < 8:
        raise ValueError(f"need count >= 1 and size >= 8, got count={count}, size={size}")
    edit_dir, reference_dir = Path(edit_dir), Path(reference_dir)
    edit_dir.mkdir(parents=True, exist_ok=True)
    reference_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        shape, _, _ = demo_item(i)
        name = f"pair_{i:03d}"
        _write_if_changed(reference_dir / f"{name}.png", render_demo_image(i, size))
        target = edit_dir / f"{name}.png"
        _write_if_changed(target, render_edit_image(i, size))
        _write_if_changed(target.with_suffix(".txt"), f"make the {shape} {_edit_colour(i)}\n".encode())
        paths.append(target)
    return paths
