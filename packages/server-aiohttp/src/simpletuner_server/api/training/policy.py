"""What a non-admin may put in a job: paths only under the allowed roots, and no host-side hooks.

Configs store paths exactly as the tutorial writes them (``/workspace/output/...``); they are checked here, when a
job is submitted over HTTP. Admins (``*``) may use any path and any hook. Everyone else: every path-valued key
(config and dataloader) must resolve, symlinks followed, inside the state directory, ``datasets_dir`` or a root
the operator listed in ``SIMPLETUNER_ALLOWED_ROOTS``; and keys that run commands or publish with the server's
credentials (hook scripts, external-script validation, hub publishing) need ``job.hooks``, which only admins
hold. Webhook hosts must resolve to public addresses (``simpletuner_core.netguard``; exceptions in
``SIMPLETUNER_WEBHOOK_ALLOW``); the job is marked ``webhook_restricted`` so its sink checks again at every
connection. Every refusal names the key and what to ask an admin for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from simpletuner_core import netguard
from simpletuner_core.config import environments as envs

#: Config keys whose value is a file or directory the trainer reads or writes.
PATH_KEYS = ("output_dir", "cache_dir_vae", "cache_dir_text", "lycoris_config", "init_lora", "accelerate_config",
             "publish_local_dir", "data_backend_config", "validation_preview_decoder",
             "pretrained_model_name_or_path")
#: Keys that run commands on the server's machine or publish with its credentials.
HOOK_KEYS = ("post_checkpoint_script", "post_upload_script", "validation_external_script", "push_to_hub",
             "push_checkpoints_to_hub")
HOOK_PERMISSION = "job.hooks"


class PolicyError(PermissionError):
    """A job a non-admin may not run; ``key`` names the config key (or dataloader path) at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _strip(config: dict[str, Any]) -> dict[str, Any]:
    return {key.removeprefix("--"): value for key, value in config.items()}


def _looks_like_path(key: str, value: str) -> bool:
    """Model ids (``org/name``) and decoder ids are hub references, not paths, unless they exist locally."""
    if key in ("pretrained_model_name_or_path", "validation_preview_decoder"):
        return value.startswith(("/", "~", ".")) or Path(value).expanduser().exists()
    return True


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


def _check_path(key: str, value: Any, base: Path, roots: list[Path]) -> None:
    if not isinstance(value, str) or not value or not _looks_like_path(key, value):
        return
    given = Path(value).expanduser()
    path = given if given.is_absolute() else base / given
    if not _inside(path, roots):
        listed = ", ".join(str(r) for r in roots)
        raise PolicyError(key, f"{value!r} is outside the allowed roots ({listed}); ask an admin to add its "
                               "directory to SIMPLETUNER_ALLOWED_ROOTS, or use a path under one of them")


def _dataloader(config: dict[str, Any], home: Path) -> tuple[Path | None, list[Any]]:
    value = config.get("data_backend_config")
    if not isinstance(value, str) or not value:
        return None, []
    path = envs.resolve_dataloader_path(value, home=home, cwd=home)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return path, []  # the trainer's preflight reports an unreadable dataloader
    return path, entries if isinstance(entries, list) else []


def _callback_urls(value: Any, home: Path) -> list[str]:
    """``callback_url`` of every target in a ``webhook_config`` (inline JSON, a JSON file, a dict or a list);
    a malformed one yields nothing here: the trainer refuses it at start with the full reason."""
    if isinstance(value, str):
        text = value.strip()
        if text and text[0] not in "[{":
            path = Path(text).expanduser()
            try:
                text = (path if path.is_absolute() else home / path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return []
        try:
            value = json.loads(text) if text else None
        except json.JSONDecodeError:
            return []
    items = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
    return [item["callback_url"] for item in items
            if isinstance(item, dict) and isinstance(item.get("callback_url"), str)]


def _check_webhooks(value: Any, home: Path) -> None:
    """Each webhook host must resolve to public addresses only (or be listed in SIMPLETUNER_WEBHOOK_ALLOW).
    A name that does not resolve now is left to the sink, which checks again at every connection."""
    if not value:
        return
    try:
        allow = netguard.AllowList.from_env()
    except ValueError as exc:
        raise PolicyError("webhook_config", f"{exc} (ask an admin to fix it)") from None
    for url in _callback_urls(value, home):
        try:
            parts = urlsplit(url.strip())
            host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        if not host:
            continue
        try:
            netguard.checked_addresses(host, port, allow)
        except netguard.BlockedAddress as exc:
            shown = f"{parts.scheme}://{f'[{host}]' if ':' in host else host}"  # no path: tokens live there
            raise PolicyError("webhook_config", f"callback_url {shown}: {exc}") from None
        except OSError:  # no such name (yet): refused or delivered at send time, after the same check
            continue


def check_job(config: dict[str, Any], *, is_admin: bool, can_hooks: bool, home: Path,
              roots: Iterable[Path]) -> None:
    """Raise :class:`PolicyError` for the first thing a non-admin may not do with this (wire-form) config."""
    if is_admin:
        return
    cfg = _strip(config)
    if not can_hooks:
        for key in HOOK_KEYS:
            if cfg.get(key):
                raise PolicyError(key, f"needs the {HOOK_PERMISSION} permission (admins): it runs commands on the "
                                       "server or publishes with the server's credentials")
        if cfg.get("validation_method") == "external-script":
            raise PolicyError("validation_method", f"external-script needs the {HOOK_PERMISSION} permission")
    allowed = [Path(os.path.realpath(r)) for r in roots]
    for key in PATH_KEYS:
        _check_path(key, cfg.get(key), home, allowed)
    webhook = cfg.get("webhook_config")
    if isinstance(webhook, str) and not webhook.lstrip().startswith(("[", "{")):
        _check_path("webhook_config", webhook, home, allowed)  # a file path, not inline JSON
    _check_webhooks(webhook, home)
    path, entries = _dataloader(cfg, home)
    base = path.parent if path is not None else home
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            if key.endswith("_dir") or key == "cache_dir":
                _check_path(f"dataloader[{index}].{key}", value, base, allowed)
