"""Cross-cutting HTTP behaviour: JSON errors, body-size limit, authentication, security headers.

API clients parse JSON, so no error (404, 405, 413, 500) may ever come back as aiohttp's HTML/text page.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from simpletuner_server.auth import auth_middleware
from simpletuner_server.keys import SETTINGS_KEY

log = logging.getLogger(__name__)

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # JSON never needs to load anything; the docs pages set their own, wider policy.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_HEADERS = "Authorization, Content-Type, X-API-Key, Last-Event-ID"
LOG_LIMIT = 200  # characters of client-controlled text (paths, messages) in one log line


def clip(text: str, limit: int = LOG_LIMIT) -> str:
    """Client-controlled text for a log line: bounded and with control characters escaped (no log forging)."""
    text = text if len(text) <= limit else text[:limit] + f"…(+{len(text) - limit})"
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text

_DROPPED_HEADERS = {hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING}


def json_error(status: int, message: str, headers: dict[str, str] | None = None,
               errors: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None) -> web.Response:
    """The one error shape every client can rely on: ``{"error": {"status", "message"[, "errors"]}}``;
    ``extra`` adds top-level fields a route documents next to it (e.g. a rejected submit's ``status``)."""
    error: dict[str, Any] = {"status": status, "message": message}
    if errors:
        error["errors"] = errors  # per-field problems of a 422: [{"path", "message"}, ...]
    return web.json_response({**(extra or {}), "error": error}, status=status, headers=headers)


def _message(exc: web.HTTPException) -> str:
    """The handler's own text when it gave one, else the bare reason phrase (not ``"404: Not Found"``)."""
    text = exc.text or ""
    return exc.reason if not text or text == f"{exc.status}: {exc.reason}" else text


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn raised HTTP errors and unexpected exceptions into JSON; keep headers such as ``Allow``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k not in _DROPPED_HEADERS}
        return json_error(exc.status, _message(exc), headers, getattr(exc, "errors", None))
    except HttpProcessingError as exc:  # a malformed body found while parsing it (multipart headers, encoding)
        log.info("malformed request body on %s %s: %s", request.method, clip(request.path), clip(str(exc)))
        return json_error(400, "Malformed request body")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, clip(request.path))
        return json_error(500, "Internal Server Error")


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reject a declared oversize body before the handler runs; a chunked one (no length declared) is cut off
    at the same limit when the handler reads it (``client_max_size`` of the request handed on). Routes with
    their own limit declare it as ``handler.body_limit(app)`` (uploads, which also meter their stream; the
    dataloader save)."""
    own_limit = getattr(request.match_info.handler, "body_limit", None)
    limit = own_limit(request.app) if own_limit is not None else request.app[SETTINGS_KEY].max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit, actual_size=length,
            text=f"Request body is {length} bytes; this route accepts at most {limit} bytes")
    return await handler(request.clone(client_max_size=limit))


async def _security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Applied on every prepared response, including error responses built by the middleware; CORS headers only
    for an origin the operator listed in ``cors_origins`` (none by default: browsers elsewhere get nothing)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    origin = request.headers.get(hdrs.ORIGIN)
    if origin and origin in request.app[SETTINGS_KEY].cors_origins:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
        response.headers[hdrs.VARY] = "Origin"


@web.middleware
async def cors_preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a CORS preflight for a listed origin (before authentication: browsers send no credentials on
    preflights); refuse one from any other origin with a 403 instead of a misleading 401."""
    if request.method != "OPTIONS" or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers:
        return await handler(request)
    if request.headers.get(hdrs.ORIGIN, "") not in request.app[SETTINGS_KEY].cors_origins:
        raise web.HTTPForbidden(text="CORS is not enabled for this origin (see SIMPLETUNER_CORS_ORIGINS)")
    return web.Response(status=204, headers={hdrs.ACCESS_CONTROL_ALLOW_METHODS: CORS_METHODS,
                                             hdrs.ACCESS_CONTROL_ALLOW_HEADERS: CORS_HEADERS,
                                             hdrs.ACCESS_CONTROL_MAX_AGE: "600"})


def setup_middlewares(app: web.Application) -> None:
    """Error handling outermost so it also shapes errors raised by the other middlewares; authentication
    innermost so an oversize body is refused before any credential lookup."""
    app.middlewares.append(error_middleware)
    app.middlewares.append(cors_preflight_middleware)
    app.middlewares.append(body_limit_middleware)
    app.middlewares.append(auth_middleware)
    app.on_response_prepare.append(_security_headers)
