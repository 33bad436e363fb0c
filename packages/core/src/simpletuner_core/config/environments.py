"""Environments on disk, in the tutorial's layout::

    $SIMPLETUNER_HOME/config/<env>/config.json          flat ``--key`` wire format
    $SIMPLETUNER_HOME/config/<env>/multidatabackend.json the dataloader list
    $SIMPLETUNER_HOME/config/<env>/metadata.json        description, tags, timestamps

Writes are atomic (temp file + rename), so a crash never leaves half a config.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from simpletuner_core import paths
from simpletuner_core.config.migrations import CURRENT_VERSION, overlay
from simpletuner_core.config.model import strip_dashes

CONFIG_FILE = "config.json"
DATALOADER_FILE = "multidatabackend.json"
METADATA_FILE = "metadata.json"


class EnvironmentError_(LookupError):
    """Unknown or conflicting environment; message says which and what exists."""


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def env_dir(name: str, home: Path | None = None) -> Path:
    return paths.config_root(home) / paths.check_name(name)


def starter_dataloader(name: str, home: Path | None = None) -> list[dict[str, Any]]:
    """A dataloader that points at ``datasets/<env>`` with a text-embed cache under ``cache/``."""
    base = home or paths.home()
    return [
        {"id": f"{name}-images", "type": "local", "dataset_type": "image",
         "instance_data_dir": str(base / "datasets" / name), "caption_strategy": "textfile",
         "resolution": 1024, "resolution_type": "pixel_area", "crop": True, "crop_style": "center",
         "crop_aspect": "square", "cache_dir_vae": str(base / "cache" / "vae" / name)},
        {"id": f"{name}-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(base / "cache" / "text" / name)},
    ]


def create_environment(name: str, *, model_family: str, model_flavour: str | None = None,
                       model_type: str = "full", lora_type: str | None = None, description: str = "",
                       tags: list[str] | None = None, home: Path | None = None,
                       extra: dict[str, Any] | None = None, owner: str | None = None) -> Path:
    """Create ``config/<name>/`` with a starter config and dataloader; refuses to overwrite."""
    directory = env_dir(name, home)
    if (directory / CONFIG_FILE).exists():
        raise EnvironmentError_(f"environment {name!r} already exists at {directory}")
    config: dict[str, Any] = {"--config_version": CURRENT_VERSION, "--model_family": model_family,
                              "--model_type": model_type}
    if model_flavour:
        config["--model_flavour"] = model_flavour
    if lora_type:
        config["--lora_type"] = lora_type
    config["--output_dir"] = str((home or paths.home()) / "output" / name)
    config["--data_backend_config"] = f"{name}/{DATALOADER_FILE}"
    for key, value in (extra or {}).items():
        config[key if key.startswith("--") else f"--{key}"] = value
    write_json_atomic(directory / DATALOADER_FILE, starter_dataloader(name, home))
    save_metadata(name, description=description, tags=tags or [], home=home, owner=owner)
    write_json_atomic(directory / CONFIG_FILE, config)
    return directory


def save_metadata(name: str, *, description: str, tags: list[str], home: Path | None = None,
                  owner: str | None = None) -> None:
    """Write ``metadata.json``; ``created_at`` and ``owner`` are kept from the existing file (set once)."""
    path = env_dir(name, home) / METADATA_FILE
    now = time.time()
    old = json.loads(path.read_text()) if path.exists() else {}
    meta = {"name": name, "description": description, "tags": list(tags),
            "created_at": old.get("created_at", now), "updated_at": now}
    if old.get("owner", owner) is not None:
        meta["owner"] = old.get("owner", owner)  # who created it (the server's user); None from the CLI
    write_json_atomic(path, meta)


def load_environment(name: str, home: Path | None = None) -> dict[str, Any]:
    """``{"name", "config", "dataloader", "metadata"}``; config in the wire (``--key``) form."""
    directory = env_dir(name, home)
    config_path = directory / CONFIG_FILE
    if not config_path.exists():
        known = ", ".join(list_environments(home)) or "none"
        raise EnvironmentError_(f"unknown environment {name!r} (known: {known})")
    config = json.loads(config_path.read_text())
    dl_path = directory / DATALOADER_FILE
    dataloader = json.loads(dl_path.read_text()) if dl_path.exists() else None
    meta_path = directory / METADATA_FILE
    metadata = json.loads(meta_path.read_text()) if meta_path.exists() else {"name": name}
    return {"name": name, "config": config, "dataloader": dataloader, "metadata": metadata}


def save_environment(name: str, config: dict[str, Any], *, merge: bool = False, description: str | None = None,
                     tags: list[str] | None = None, home: Path | None = None) -> dict[str, Any]:
    """Replace (default) or merge the stored config; returns the config as saved (wire form)."""
    directory = env_dir(name, home)
    current = load_environment(name, home)["config"] if (directory / CONFIG_FILE).exists() else {}
    incoming = {f"--{k}": v for k, v in strip_dashes(config).items()}
    saved = overlay({f"--{k}": v for k, v in strip_dashes(current).items()}, incoming) if merge else incoming
    saved.setdefault("--config_version", CURRENT_VERSION)
    write_json_atomic(directory / CONFIG_FILE, saved)
    if description is not None or tags is not None or not (directory / METADATA_FILE).exists():
        old = load_environment(name, home)["metadata"]
        save_metadata(name, description=description if description is not None else old.get("description", ""),
                      tags=tags if tags is not None else old.get("tags", []), home=home)
    return saved


def save_dataloader(name: str, dataloader: list[dict[str, Any]], home: Path | None = None) -> None:
    write_json_atomic(env_dir(name, home) / DATALOADER_FILE, dataloader)


def list_environments(home: Path | None = None) -> list[str]:
    root = paths.config_root(home)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file() and paths.NAME_RE.fullmatch(p.name))


def delete_environment(name: str, home: Path | None = None) -> None:
    directory = env_dir(name, home)
    if not (directory / CONFIG_FILE).exists():
        raise EnvironmentError_(f"unknown environment {name!r}")
    shutil.rmtree(directory)


def export_environment(name: str, home: Path | None = None) -> dict[str, Any]:
    """Everything needed to recreate the environment elsewhere, as one JSON document."""
    env = load_environment(name, home)
    return {"format": "simpletuner-environment", "version": CURRENT_VERSION, **env}


def resolve_dataloader_path(value: str, home: Path | None = None, cwd: Path | None = None) -> Path:
    """Find ``data_backend_config``: absolute; else under ``config/``; else under the state dir; else cwd."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    base = home or paths.home()
    for candidate in (paths.config_root(base) / path, base / path, (cwd or Path.cwd()) / path):
        if candidate.exists():
            return candidate
    return paths.config_root(base) / path
