"""``/api/configs``: training environments on disk (``settings.home/config/<name>/``), via core's
``simpletuner_core.config.environments``.

Saving checks structure only (unknown keys and wrong types are a 422 with ``{path, message, did_you_mean}``):
a config may be work in progress, so the semantic rules come back as ``warnings`` instead of refusing the save.
Creating checks the model choice (family, flavour, model_type, lora_type) against the plugin registry.
Disk work runs in a worker thread; store calls stay on the loop (see ``auth``). Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from simpletuner_core import paths
from simpletuner_core.config import environments as envs
from simpletuner_core.config.errors import ConfigError, ConfigInvalid
from simpletuner_core.config.examples import create_from_example, fill_example_datasets
from simpletuner_core.config.migrations import overlay
from simpletuner_core.config.model import structure
from simpletuner_core.config.rules import apply_family_defaults, check, validate, warnings_for
from simpletuner_core.data.config import parse_dataloader
from simpletuner_core.plugins import get_registry
from simpletuner_core.plugins.registry import RegistryError
from simpletuner_core.records import ConfigExample
from simpletuner_server import validation as v
from simpletuner_server.api_spec import accepts
from simpletuner_server.auth import current_principal, iso, require
from simpletuner_server.keys import SETTINGS_KEY, STORE_KEY

T = TypeVar("T")

CONFIG_TYPES = ("model",)  # every environment is a model config; dataloaders live inside them
MODES = ("replace", "merge")
MODEL_KEYS = ("model_family", "model_flavour", "model_type", "lora_type")
RESERVED_NAMES = ("active", "environments", "examples", "fields")  # static paths next to /api/configs/{name}


@v.check({"type": "string", "pattern": f"^{paths.NAME_RE.pattern}$"})
def name_check(value: Any) -> str | None:
    try:
        paths.check_name(value)
    except ValueError as exc:
        return str(exc)
    return None


@v.check({"type": "string", "maxLength": 4096})
def _any_text(value: Any) -> str | None:
    return None if isinstance(value, str) and len(value) <= 4096 else "must be a string (at most 4096 characters)"


@v.check({"type": "object", "description": "config keys (with or without the leading --) and values"})
def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a JSON object of --key: value pairs"


CREATE_ENV = v.Body({
    "name": name_check, "model_family": v.text(), "model_flavour": v.text(), "model_type": v.text(),
    "lora_type": v.text(), "description": _any_text, "tags": v.string_list, "example": v.text(64),
}, required=("name",))
UPDATE_ENV = v.Body({
    "name": name_check, "description": _any_text, "tags": v.string_list, "config": _object, "merge": v.boolean,
})


def active_key(request: web.Request) -> str:
    """Each user has their own active environment: one researcher activating must not retarget another's
    ``/api/training/start``."""
    return f"active_config:{current_principal(request).user.username}"


async def _owned(request: web.Request, name: str) -> dict[str, Any]:
    """The environment, if the caller may change it: its creator, or an admin. Environments made outside the
    server (CLI, files) have no owner and only admins may change them over HTTP."""
    env = await _load(request, name)
    principal = current_principal(request)
    owner = env["metadata"].get("owner")
    if not principal.can("*") and owner != principal.user.username:
        raise web.HTTPForbidden(text=f"Environment {name!r} belongs to "
                                     f"{'another user' if owner else 'no user (created outside the server)'}; "
                                     "only its owner or an admin may change it")
    return env


SECRET_HINTS = ("secret", "token", "password", "webhook_config")
REDACTED = "<redacted: only the owner and admins see this value>"


def is_secret(key: str, value: Any) -> bool:
    """A set value whose key names a secret (or webhook targets, whose URLs carry tokens)."""
    return bool(value) and any(hint in key.lower() for hint in SECRET_HINTS)


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every secret-bearing value replaced by :data:`REDACTED`."""
    return {key: REDACTED if is_secret(key, value) else value for key, value in config.items()}


def _shown(request: web.Request, env: dict[str, Any]) -> dict[str, Any]:
    """``env`` as this caller may see it: webhook targets (URLs with tokens, HMAC secrets) and any key that
    names a secret are hidden from everyone but the owner and admins."""
    principal = current_principal(request)
    if principal.can("*") or env["metadata"].get("owner") == principal.user.username:
        return env
    return {**env, "config": redact(env["config"])}


def _home(request: web.Request) -> Path:
    return request.app[SETTINGS_KEY].home


def _path_name(request: web.Request) -> str:
    name = request.match_info["name"]
    problem = name_check(name)
    if problem:
        raise v.InvalidRequest([{"path": "name", "message": problem}])
    return name


def _invalid(errors: list[ConfigError]) -> v.InvalidRequest:
    return v.InvalidRequest([e.to_dict() for e in errors])


async def _disk(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(func, *args, **kwargs)


async def _load(request: web.Request, name: str) -> dict[str, Any]:
    """The environment, or a JSON 404 naming it (and the known ones)."""
    try:
        return await _disk(envs.load_environment, name, home=_home(request))
    except envs.EnvironmentError_ as exc:
        raise web.HTTPNotFound(text=str(exc)) from None


def _summary(home: Path, name: str) -> dict[str, Any]:
    try:
        env = envs.load_environment(name, home=home)
    except (OSError, ValueError):  # a hand-broken file must not hide the other environments
        return {"name": name, "description": "", "tags": [], "model_family": None, "model_flavour": None,
                "model_type": None, "updated_at": None, "error": "unreadable environment files"}
    config, meta = env["config"], env["metadata"]
    return {"name": name, "description": meta.get("description", ""), "tags": meta.get("tags", []),
            "model_family": config.get("--model_family"), "model_flavour": config.get("--model_flavour"),
            "model_type": config.get("--model_type"), "updated_at": iso(meta.get("updated_at"))}


def _list(home: Path) -> list[dict[str, Any]]:
    return [_summary(home, name) for name in envs.list_environments(home=home)]


def _model_errors(body: dict[str, Any]) -> list[ConfigError]:
    """Problems with the model choice only: the rest of a starter config is the user's to fill in."""
    registry = get_registry()
    raw = {key: body[key] for key in MODEL_KEYS if key in body}
    raw.setdefault("model_type", "full")
    try:
        cfg = structure(apply_family_defaults(raw, registry), registry)
    except ConfigInvalid as exc:
        return exc.errors
    return [e for e in check(cfg, registry, provided=raw) if e.path in MODEL_KEYS]


def _warnings(config: dict[str, Any]) -> list[str]:
    try:
        return warnings_for(validate(config, get_registry()), config)
    except ConfigInvalid as exc:
        return [str(e) for e in exc.errors]


@require("config.view")
async def list_configs(request: web.Request) -> web.Response:
    config_type = request.query.get("config_type")
    if config_type is not None and config_type not in CONFIG_TYPES:
        raise v.InvalidRequest([{"path": "config_type", "message": f"must be one of: {', '.join(CONFIG_TYPES)}"}])
    configs = await _disk(_list, _home(request))
    return web.json_response({"configs": configs, "count": len(configs)})


def _example_json(example: ConfigExample, detail: bool = False) -> dict[str, Any]:
    config = example.config
    out: dict[str, Any] = {
        "name": example.name, "description": example.description, "datasets": list(example.datasets),
        "defaults": {key: config.get(f"--{key}") for key in (*MODEL_KEYS, "data_backend_config")},
        "has_dataloader": bool(example.dataloader),
    }
    if detail:
        out.update(config=config, dataloader=example.dataloader)
    return out


def _example(name: str) -> ConfigExample:
    try:
        return get_registry().examples.get(name)
    except RegistryError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None


@require("config.view")
async def list_examples(request: web.Request) -> web.Response:
    """Shipped templates (from ``register_config_examples``); create one with ``{"name", "example"}``."""
    examples = [_example_json(e) for e in get_registry().examples.values()]
    return web.json_response({"examples": examples, "count": len(examples)})


@require("config.view")
async def get_example(request: web.Request) -> web.Response:
    """One template in full, placeholders (``{datasets_dir}``, …) left in."""
    return web.json_response(_example_json(_example(request.match_info["example"]), detail=True))


#: What an example that leaves a model key out runs with (the config defaults).
EXAMPLE_DEFAULTS = {"model_type": "full", "lora_type": "standard"}


def _example_conflicts(example: ConfigExample, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The model keys in ``body`` that disagree with ``example`` (family aliases count as the same family)."""
    families = get_registry().families
    conflicts = []
    for key in MODEL_KEYS:
        if key not in body:
            continue
        given, expected = body[key], example.config.get(f"--{key}", EXAMPLE_DEFAULTS.get(key))
        if key == "model_family":
            same = families.canonical(given) is not None and families.canonical(given) == families.canonical(expected)
        else:
            same = given == expected
        if not same:
            conflicts.append({"path": key, "message": f"{given!r} conflicts with example {example.name!r}, which "
                              f"sets {key}={expected!r}; leave it out, or change it afterwards with PUT",
                              "given": given, "example": expected})
    return conflicts


async def _create_from_example(request: web.Request, body: dict[str, Any]) -> web.Response:
    """Create from a template; model keys in the body must agree with it. A ``demo_data`` example's missing
    dataset folders are filled with the demo set (listed in ``datasets_created``), so it starts as shipped."""
    example = _example(body["example"])
    conflicts = _example_conflicts(example, body)
    if conflicts:
        raise v.InvalidRequest(conflicts)
    settings = request.app[SETTINGS_KEY]
    try:
        await _disk(create_from_example, body["name"], example, home=settings.home,
                    datasets_dir=settings.datasets_dir, description=body.get("description"),
                    tags=body.get("tags"), owner=current_principal(request).user.username)
    except envs.EnvironmentError_:
        raise web.HTTPConflict(text=f"Environment {body['name']!r} already exists") from None
    created = await _disk(fill_example_datasets, body["name"], example, home=settings.home,
                          datasets_dir=settings.datasets_dir)
    return web.json_response({**await _load(request, body["name"]), "datasets_created": created}, status=201)


@accepts(body=CREATE_ENV, tag="configurations")
@require("config.create")
async def create_config(request: web.Request) -> web.Response:
    """A starter environment for ``model_family`` (…), or a copy of a shipped template with ``example``."""
    body = await v.read_json(request, CREATE_ENV)
    if body["name"] in RESERVED_NAMES:
        raise v.InvalidRequest([{"path": "name", "message": f"{body['name']!r} is reserved by the API (its path "
                                 f"/api/configs/{body['name']} means something else)"}])
    if "example" in body:
        return await _create_from_example(request, body)
    if "model_family" not in body:
        raise v.InvalidRequest([{"path": "model_family", "message": "is required (or give an example name)"}])
    errors = _model_errors(body)
    if errors:
        raise _invalid(errors)
    name, home = body["name"], _home(request)
    try:
        await _disk(envs.create_environment, name, model_family=body["model_family"],
                    model_flavour=body.get("model_flavour"), model_type=body.get("model_type", "full"),
                    lora_type=body.get("lora_type"), description=body.get("description", ""),
                    tags=body.get("tags", []), home=home, owner=current_principal(request).user.username)
    except envs.EnvironmentError_:
        raise web.HTTPConflict(text=f"Environment {name!r} already exists") from None
    return web.json_response(await _load(request, name), status=201)


@require("config.view")
async def get_config(request: web.Request) -> web.Response:
    """The environment; secret-bearing values are redacted unless the caller owns it or is an admin."""
    return web.json_response(_shown(request, await _load(request, _path_name(request))))


@accepts(body=UPDATE_ENV, tag="configurations")
@require("config.edit.own")
async def update_config(request: web.Request) -> web.Response:
    """Replace the stored config (default) or overlay keys (``?mode=merge`` or ``"merge": true``)."""
    name = _path_name(request)
    body = await v.read_json(request, UPDATE_ENV)
    mode = request.query.get("mode", "replace")
    if mode not in MODES:
        raise v.InvalidRequest([{"path": "mode", "message": f"must be one of: {', '.join(MODES)}"}])
    if body.get("name", name) != name:
        raise v.InvalidRequest([{"path": "name", "message": f"does not match the environment in the URL ({name!r});"
                                 " renaming is not supported"}])
    merge = mode == "merge" or body.get("merge", False)
    current = (await _owned(request, name))["config"]
    incoming = body.get("config")
    if incoming is None:
        result = current  # metadata-only update
    else:
        result = overlay(current, incoming) if merge else dict(incoming)
    try:
        structure(result, get_registry())
    except ConfigInvalid as exc:
        raise _invalid(exc.errors) from None
    home = _home(request)
    saved = await _disk(envs.save_environment, name, result, description=body.get("description"),
                        tags=body.get("tags"), home=home)
    env = await _load(request, name)
    return web.json_response({**env, "config": saved, "warnings": _warnings(saved)})


@require("config.delete.own")
async def delete_config(request: web.Request) -> web.Response:
    name = _path_name(request)
    await _owned(request, name)
    try:
        await _disk(envs.delete_environment, name, home=_home(request))
    except envs.EnvironmentError_ as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    return web.Response(status=204)


@require("job.submit")
async def activate_config(request: web.Request) -> web.Response:
    """Make ``name`` the caller's active environment (what ``/api/training/validate`` and ``start`` use).

    Needs ``job.submit``, like validate and start: activating is for training, and changes only the caller's own
    setting, so edit rights on the environment are not needed."""
    name = _path_name(request)
    await _load(request, name)  # 404 for an unknown one; anyone who may view it may train it
    request.app[STORE_KEY].set_setting(active_key(request), name)
    return web.json_response({"active": name})


@require("config.view")
async def active_config(request: web.Request) -> web.Response:
    """The active environment and its config; null when none is set or it has since been deleted."""
    name = request.app[STORE_KEY].get_setting(active_key(request))
    if not isinstance(name, str) or name_check(name):
        return web.json_response({"active": None, "config": None})
    try:
        env = await _disk(envs.load_environment, name, home=_home(request))
    except envs.EnvironmentError_:
        return web.json_response({"active": None, "config": None})
    return web.json_response({"active": name, "config": _shown(request, env)["config"]})


@require("config.view")
async def export_config(request: web.Request) -> web.Response:
    name = _path_name(request)
    env = await _load(request, name)
    document = await _disk(envs.export_environment, name, home=_home(request))
    document = {**document, "config": _shown(request, env)["config"]}
    return web.json_response(document, headers={"Content-Disposition": f'attachment; filename="{name}.json"'})


def _dataloader_limit(app: web.Application) -> int:
    return int(app[SETTINGS_KEY].max_dataloader_bytes)


@require("config.edit.own")
async def save_dataloader(request: web.Request) -> web.Response:
    """No body: regenerate the starter dataloader. A JSON list: validate it, then save it as given."""
    name, home = _path_name(request), _home(request)
    await _owned(request, name)
    raw = (await request.read()).strip()
    if not raw:
        dataloader = envs.starter_dataloader(name, home=home)
    else:
        try:
            dataloader = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="Request body must be valid JSON") from None
        try:
            parse_dataloader(dataloader, get_registry())
        except ConfigInvalid as exc:
            raise _invalid(exc.errors) from None
    await _disk(envs.save_dataloader, name, dataloader, home=home)
    return web.json_response({"name": name, "dataloader": dataloader})


save_dataloader.body_limit = _dataloader_limit  # type: ignore[attr-defined]  # see body_limit_middleware


@require("config.view")
async def effective_config(request: web.Request) -> web.Response:
    """Every key of the environment's effective config with its source: ``file``, ``default``, ``override``
    (never here: the stored file is all there is) or ``alias:OLD_NAME`` (an old name, migrated). Secret-bearing
    values are redacted as in ``GET /api/configs/{name}``. An invalid stored config answers 422 with its errors."""
    from simpletuner_core.config.show import effective

    name = _path_name(request)
    env = await _load(request, name)
    try:
        table = effective(env["config"], registry=get_registry())
    except ConfigInvalid as exc:
        raise _invalid(exc.errors) from None
    if _shown(request, env) is not env:  # not the owner or an admin
        table = {key: {**entry, "value": REDACTED} if is_secret(key, entry["value"]) else entry
                 for key, entry in table.items()}
    return web.json_response({"name": name, "config": table}, dumps=lambda o: json.dumps(o, default=str))
