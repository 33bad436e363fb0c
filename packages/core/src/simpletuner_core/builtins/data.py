"""Core's ``local`` data backend and its caption strategies, registered through the same hooks as any plugin.

Kept torch-free and PIL-free: listing files and reading captions must work in the preflight, before any model
(or heavy library) is loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import CaptionStrategySpec, DataBackendSpec

if TYPE_CHECKING:
    from simpletuner_core.data.config import DatasetConfig

ReadText = Callable[[str], "str | None"]


def dataset_root(dataset: DatasetConfig, base_dir: Path) -> Path:
    """``instance_data_dir`` as an absolute path; relative paths are relative to the config's directory."""
    from simpletuner_core.data.config import resolve_data_dir

    if not dataset.instance_data_dir:
        raise FileNotFoundError(f"dataset {dataset.id!r} has no instance_data_dir")
    return Path(resolve_data_dir(dataset, base_dir))


def list_local_files(dataset: DatasetConfig, base_dir: Path) -> list[str]:
    """Every file under the dataset root, recursively, sorted; hidden files and folders (``.cache``) are skipped."""
    root = dataset_root(dataset, base_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist or is not a directory")
    out: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(os.path.join(folder, name) for name in files if not name.startswith("."))
    return sorted(out)


def read_local_bytes(dataset: DatasetConfig, path: str) -> bytes:
    return Path(path).read_bytes()


def caption_from_textfile(dataset: DatasetConfig, image_path: str, read_text: ReadText) -> str | None:
    """The sibling ``<stem>.txt``, whole and stripped (multi-line captions are kept as written)."""
    text = read_text(str(Path(image_path).with_suffix(".txt")))
    if text is None:
        return None
    return text.strip() or None


_DUPLICATE_SUFFIX = re.compile(r"(\s*\(\d+\)|[\s_-]*\d+)+$")


def caption_from_filename(dataset: DatasetConfig, image_path: str, read_text: ReadText) -> str | None:
    """``red_square-02 (1).png`` → ``red square``: separators become spaces, counters and copy suffixes go."""
    stem = _DUPLICATE_SUFFIX.sub("", Path(image_path).stem)
    words = re.sub(r"[_\-\s]+", " ", stem).strip()
    return words or None


def caption_from_instance_prompt(dataset: DatasetConfig, image_path: str, read_text: ReadText) -> str | None:
    """One prompt for every image of the dataset (DreamBooth-style)."""
    prompt = (dataset.instance_prompt or "").strip()
    return prompt or None


@hookimpl
def register_data_backends(register: Callable[[DataBackendSpec], None]) -> None:
    register(DataBackendSpec(
        name="local",
        list_files=list_local_files,
        read_bytes=read_local_bytes,
        description="Files on local disk under instance_data_dir (relative paths: next to the dataloader JSON).",
    ))


@hookimpl
def register_caption_strategies(register: Callable[[CaptionStrategySpec], None]) -> None:
    register(CaptionStrategySpec(
        name="textfile", caption=caption_from_textfile,
        description="Caption is the text of the image's sibling <stem>.txt.",
    ))
    register(CaptionStrategySpec(
        name="filename", caption=caption_from_filename,
        description="Caption is the file name, with _ and - as spaces and trailing counters removed.",
    ))
    register(CaptionStrategySpec(
        name="instanceprompt", caption=caption_from_instance_prompt,
        description="Every image uses the dataset's instance_prompt.",
    ))
