"""Dataset folders a dataloader names but the disk lacks, and demo data to fill a shipped example's.

The server refuses to start a job whose dataset folder is missing (naming the folder and the upload call), and
fills the folders of an environment made from a shipped tiny example, so that one starts with no other step.
"""

from __future__ import annotations

import os
from pathlib import Path

from simpletuner_core.data.config import DatasetConfig, resolve_data_dir

#: Dataset types read from a folder of files.
FOLDER_TYPES = ("image", "conditioning")


def missing_folders(datasets: list[DatasetConfig], base_dir: str | Path) -> list[tuple[int, DatasetConfig, str]]:
    """``(index, dataset, folder)`` for every enabled local image/conditioning dataset whose folder is absent
    (relative folders resolve against ``base_dir``, the dataloader JSON's directory, as the trainer does)."""
    out = []
    for index, ds in enumerate(datasets):
        if ds.disabled or ds.type != "local" or ds.dataset_type not in FOLDER_TYPES:
            continue
        folder = resolve_data_dir(ds, base_dir)
        if folder and not os.path.isdir(folder):
            out.append((index, ds, folder))
    return out


def fill_demo_folders(datasets: list[DatasetConfig], base_dir: str | Path, inside: Path) -> list[str]:
    """Write core's demo set into each missing folder under ``inside``: captioned images for a plain image
    dataset, edit/reference pairs (same file names) for an image dataset with a missing conditioning dataset.
    Returns the folders created; folders that exist are never touched."""
    from simpletuner_core.demo_data import write_demo_dataset, write_demo_pairs

    root = Path(os.path.realpath(inside))
    missing = {ds.id: folder for _, ds, folder in missing_folders(datasets, base_dir)
               if Path(os.path.realpath(folder)).is_relative_to(root)}
    created: list[str] = []
    for ds in datasets:
        if ds.dataset_type != "image" or ds.id not in missing:
            continue
        refs = [missing[ref] for ref in ds.conditioning_data if ref in missing]
        if ds.conditioning_data:
            if len(refs) != 1:
                continue  # a reference set the user already has: pairs must come from them
            write_demo_pairs(Path(missing[ds.id]), Path(refs[0]))
            created += [missing[ds.id], refs[0]]
        else:
            write_demo_dataset(Path(missing[ds.id]))
            created.append(missing[ds.id])
    return created
