"""Environments from shipped templates (``register_config_examples``): fill the placeholders, write the files.

Templates name no machine paths; ``{datasets_dir}``, ``{output_dir}``, ``{cache_dir}`` and ``{env}`` are
resolved here, once, when the environment is created, so the saved environment runs as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simpletuner_core.config import environments as envs
from simpletuner_core.records import ConfigExample


def _fill(value: Any, values: dict[str, str]) -> Any:
    """Replace ``{name}`` placeholders in every string, recursively; other text is left alone."""
    if isinstance(value, str):
        for key, replacement in values.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    return value


def render_example(example: ConfigExample, env: str, home: Path,
                   datasets_dir: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config, dataloader) of ``example`` for an environment named ``env`` under ``home``."""
    values = {"datasets_dir": str(datasets_dir or home / "datasets"), "output_dir": str(home / "output" / env),
              "cache_dir": str(home / "cache" / env), "env": env}
    config = _fill(dict(example.config), values)
    config["--data_backend_config"] = f"{env}/{envs.DATALOADER_FILE}"
    config.setdefault("--output_dir", values["output_dir"])
    return config, _fill([dict(d) for d in example.dataloader], values)


def fill_example_datasets(name: str, example: ConfigExample, *, home: Path,
                          datasets_dir: Path | None = None) -> list[str]:
    """For a ``demo_data`` example: write the demo set into the missing dataset folders of environment
    ``name`` (under ``datasets_dir`` only, never elsewhere); returns the folders created."""
    from simpletuner_core.data.config import parse_dataloader
    from simpletuner_core.data.folders import fill_demo_folders

    if not example.demo_data:
        return []
    _, dataloader = render_example(example, name, home, datasets_dir)
    return fill_demo_folders(parse_dataloader(dataloader), envs.env_dir(name, home),
                             inside=datasets_dir or home / "datasets")


def create_from_example(name: str, example: ConfigExample, *, home: Path, datasets_dir: Path | None = None,
                        description: str | None = None, tags: list[str] | None = None,
                        owner: str | None = None) -> Path:
    """Create environment ``name`` holding the example's config and dataloader; refuses to overwrite. Dataset
    folders are filled separately (:func:`fill_example_datasets`), after the environment exists."""
    config, dataloader = render_example(example, name, home, datasets_dir)
    directory = envs.create_environment(name, model_family=config["--model_family"],
                                        model_flavour=config.get("--model_flavour"),
                                        model_type=config.get("--model_type", "full"),
                                        lora_type=config.get("--lora_type"),
                                        description=description if description is not None else example.description,
                                        tags=tags, home=home, owner=owner)
    envs.save_environment(name, config, home=home)
    envs.save_dataloader(name, dataloader, home=home)
    return directory
