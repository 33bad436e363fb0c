"""``/openapi.json`` (OpenAPI 3.1), ``/docs`` (Swagger UI) and ``/redoc``, all served from this machine.

The document is generated from the live route table: paths and methods from the router, summaries from the
handlers' docstrings, permissions from ``require``, and request schemas from the very ``Body`` / ``Form`` /
``Query`` objects the handlers validate with (``api_spec.accepts``). The UI bundles come from the
``openapi-ui-bundles`` package, so the pages make no request outside this server.
"""

from __future__ import annotations

import html
import inspect
import json
import re
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from simpletuner_server import __version__
from simpletuner_server.api_spec import Form, Query
from simpletuner_server.auth import PUBLIC_PATHS, WORKER_PREFIX

SPEC_KEY = web.AppKey("openapi_spec", dict)
TAGS: dict[str, str] = {
    "configurations": "Training environments: create, edit, activate, export, dataloaders, shipped examples.",
    "training": "Validate and start training, follow status and events, send commands to the running job.",
    "jobs": "Every job you may see (admins: all), newest first, and one job in full: state, timing, progress.",
    "datasets": "Dataset folders and uploads under the server's datasets directory.",
    "queue": "GPU-aware local job queue: statistics, submission, concurrency limits.",
    "system": "Host metrics and accelerator allocation.",
    "auth": "First-admin setup, login, sessions and API keys.",
    "users": "User accounts and their levels (admins).",
    "workers": "Remote GPU workers: admins register, drain and delete them (/api/admin/workers); agents "
               "register, stream dispatches and report with X-Worker-Token (/api/workers).",
    "meta": "Health, version, plugins and this document.",
}
#: Handler module (below ``simpletuner_server.``) -> tag; a subpackage's modules share their area's tag.
MODULE_TAGS = {"api.auth_views": "auth", "api.users_views": "users", "api.configs_views": "configurations",
               "api.training": "training", "api.jobs_views": "jobs", "api.datasets": "datasets",
               "api.queue_views": "queue", "api.system_views": "system", "workers": "workers"}


def _tag_of(module: str) -> str:
    name = module.removeprefix("simpletuner_server.")
    while name:
        if name in MODULE_TAGS:
            return MODULE_TAGS[name]
        name = name.rpartition(".")[0]
    return "meta"
ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["status", "message"], "properties": {
        "status": {"type": "integer"}, "message": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "path": {"type": "string"}, "message": {"type": "string"}, "did_you_mean": {"type": "string"}}}}}}},
}
#: Bodies of ``--key=value`` config fields (the training form): any keys, documented in the config reference.
CONFIG_FORM = {"type": "object", "additionalProperties": True,
               "description": "Config keys as --key=value fields (multipart/urlencoded) or a JSON object; merged "
                              "over the active environment. See docs/config-reference.md."}
FREE_FORM_HANDLERS = {"validate_config", "start_training", "stop_training", "cancel_training", "run_validation",
                      "run_checkpoint", "list_job_checkpoints"}
_PATH_VAR = re.compile(r"\{(\w+)(?::([^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _path_and_params(path: str) -> tuple[str, list[dict[str, Any]]]:
    """``/api/users/{user_id:\\d+}`` → (``/api/users/{user_id}``, its path parameter)."""
    params = []
    for name, pattern in _PATH_VAR.findall(path):
        schema: dict[str, Any] = {"type": "integer", "minimum": 0} if pattern == r"\d+" else {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _PATH_VAR.sub(lambda m: "{" + m.group(1) + "}", path), params


def _request_body(spec: dict[str, Any], name: str) -> dict[str, Any] | None:
    body, form = spec.get("body"), spec.get("form")
    if body is not None:
        return {"required": True, "content": {"application/json": {"schema": body.schema()}}}
    if isinstance(form, Form):
        schema = form.schema()
        content = {"multipart/form-data": {"schema": schema}}
        if '"binary"' not in json.dumps(dict(form.fields)):  # file fields travel only as multipart
            content["application/x-www-form-urlencoded"] = {"schema": schema}
            content["application/json"] = {"schema": schema}
        return {"required": True, "content": content}
    if name in FREE_FORM_HANDLERS:
        return {"required": False, "content": {"application/json": {"schema": CONFIG_FORM},
                                               "multipart/form-data": {"schema": CONFIG_FORM},
                                               "application/x-www-form-urlencoded": {"schema": CONFIG_FORM}}}
    return None


def _operation(method: str, path: str, handler: Handler) -> tuple[str, dict[str, Any]]:
    spec: dict[str, Any] = getattr(handler, "api_spec", {})
    name = handler.__name__
    doc = inspect.getdoc(handler) or name.replace("_", " ").capitalize()
    first = " ".join(doc.split("\n\n")[0].split())
    summary = re.split(r"(?<=[.:;])\s", first, maxsplit=1)[0].rstrip(".:;")
    description = doc if len(doc) > len(summary) + 1 else ""
    openapi_path, params = _path_and_params(path)
    query = spec.get("query")
    if isinstance(query, Query):
        params += [{"name": key, "in": "query", "required": key in query.required, "schema": schema}
                   for key, schema in query.params.items()]
    op: dict[str, Any] = {
        "operationId": f"{method.lower()}_{name}" if method != "GET" else name,
        "summary": summary.strip(), "tags": [spec.get("tag") or _tag_of(handler.__module__)],
        "responses": {"200": {"description": "Success",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      "400": _error("Malformed request"), "422": _error("Invalid fields (listed in error.errors)")},
    }
    if description.strip():
        op["description"] = description.strip()
    if params:
        op["parameters"] = params
    body = _request_body(spec, name)
    if body is not None:
        op["requestBody"] = body
        op["responses"]["413"] = _error("Request body too large")
    permission = getattr(handler, "required_permission", None)
    if path in PUBLIC_PATHS and not permission:  # a public path's write may still check (PUT registration)
        op["security"] = []
    elif path.startswith(WORKER_PREFIX):
        op["security"] = [{"workerToken": []}]
        op["responses"]["401"] = _error("Missing, forged, rotated or deleted worker token")
        op["responses"]["403"] = _error("Another worker's job")
    else:
        op["responses"]["401"] = _error("Authentication required")
        if permission:
            op["responses"]["403"] = _error(f"Needs the {permission!r} permission")
            op["x-permission"] = permission
    if "{" in path:
        op["responses"]["404"] = _error("Unknown resource")
    return openapi_path, op


def build_spec(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every registered route (HEAD, the docs pages and the dashboard left out)."""
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        raw = info.get("path") or info.get("formatter")
        if route.method in ("HEAD", "*") or raw is None or raw.startswith(("/docs/static", "/ui/static")):
            continue
        if getattr(route.handler, "ui_page", False):  # dashboard pages are HTML for browsers, not operations
            continue
        path, op = _operation(route.method, raw, route.handler)  # type: ignore[arg-type]
        while op["operationId"] in seen:
            op["operationId"] += "_"
        seen.add(op["operationId"])
        paths.setdefault(path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "simpletuner-core API", "version": __version__,
                 "description": "Fine-tune diffusion models over HTTP. Authenticate with `X-API-Key: st_…`, "
                                "`Authorization: Bearer st_…` or the session cookie from login."},
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "simpletuner_session"},
                "workerToken": {"type": "apiKey", "in": "header", "name": "X-Worker-Token"},
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}, {"session": []}],
    }


async def openapi_json(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document."""
    app = request.app
    if SPEC_KEY not in app:
        app[SPEC_KEY] = build_spec(app)  # routes are frozen once serving: build once
    return web.json_response(app[SPEC_KEY], dumps=lambda d: json.dumps(d, separators=(",", ":")))


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{head}</head><body>{body}</body></html>"""


async def swagger_ui(request: web.Request) -> web.Response:
    """Interactive API docs (Swagger UI, served locally)."""
    page = _PAGE.format(
        title=html.escape("simpletuner-core API"),
        head='<link rel="stylesheet" href="/docs/static/swagger/swagger-ui.css">',
        body='<div id="swagger-ui"></div><script src="/docs/static/swagger/swagger-ui-bundle.js"></script>'
             '<script src="/docs/static/swagger-init.js"></script>')
    return web.Response(text=page, content_type="text/html", headers=_CSP)


async def swagger_init(request: web.Request) -> web.Response:
    """The Swagger UI bootstrap, as a same-origin script so the page needs no inline JavaScript."""
    script = 'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});'
    return web.Response(text=script, content_type="application/javascript")


async def redoc(request: web.Request) -> web.Response:
    """Reference API docs (ReDoc, served locally)."""
    page = _PAGE.format(title=html.escape("simpletuner-core API"), head="",
                        body='<redoc spec-url="/openapi.json"></redoc>'
                             '<script src="/docs/static/redoc/redoc.standalone.js"></script>')
    return web.Response(text=page, content_type="text/html", headers=_CSP)


#: The docs pages load only this server's scripts (ReDoc needs inline styles and web workers from blobs).
_CSP = {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                   "worker-src 'self' blob:; frame-ancestors 'none'"}


def setup_docs(app: web.Application) -> None:
    """Register the document, the two pages and their static bundles (public: see ``auth.PUBLIC_PATHS``)."""
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", swagger_ui)
    app.router.add_get("/redoc", redoc)
    app.router.add_get("/docs/static/swagger-init.js", swagger_init)
    try:
        from openapi_ui_bundles import redoc as redoc_bundle
        from openapi_ui_bundles import swagger_ui as swagger_bundle
    except ImportError:  # pragma: no cover - a declared dependency; the JSON document still works
        return
    app.router.add_static("/docs/static/swagger", swagger_bundle.static_path)
    app.router.add_static("/docs/static/redoc", redoc_bundle.static_path)
