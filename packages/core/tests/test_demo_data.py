"""The demo dataset: right files, deterministic, idempotent, and varied enough to learn from."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from simpletuner_core.demo_data import demo_caption, write_demo_dataset


def test_writes_images_and_captions(tmp_path: Path) -> None:
    paths = write_demo_dataset(tmp_path / "demo", count=5, size=32)
    assert [p.name for p in paths] == [f"demo_{i:03d}.png" for i in range(5)]
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            assert img.size == (32, 32) and img.mode == "RGB"
        assert path.with_suffix(".txt").read_text().strip() == demo_caption(i)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == sorted(
        [p.name for p in paths] + [p.with_suffix(".txt").name for p in paths]
    )


def test_idempotent_and_deterministic(tmp_path: Path) -> None:
    paths = write_demo_dataset(tmp_path / "a", count=4)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    write_demo_dataset(tmp_path / "a", count=4)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()} == before
    others = write_demo_dataset(tmp_path / "b", count=4)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in others]


def test_images_and_captions_differ(tmp_path: Path) -> None:
    paths = write_demo_dataset(tmp_path, count=100)
    assert len({p.read_bytes() for p in paths}) == 100
    captions = [p.with_suffix(".txt").read_text() for p in paths[:90]]
    assert len(set(captions)) == 90  # every shape/colour/background combination once per cycle
    for caption in captions:
        words = caption.split()
        assert words[1] != words[4]  # foreground differs from background


def test_demo_pairs_share_names_and_differ_by_the_edit(tmp_path: Path) -> None:
    from simpletuner_core.demo_data import write_demo_pairs

    targets = write_demo_pairs(tmp_path / "edit", tmp_path / "ref", count=4, size=32)
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == sorted(p.name for p in targets)
    for target in targets:
        reference = tmp_path / "ref" / target.name
        assert Image.open(target).size == Image.open(reference).size == (32, 32)
        assert target.read_bytes() != reference.read_bytes()
        assert target.with_suffix(".txt").read_text().startswith("make the ")
