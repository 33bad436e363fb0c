"""Authentication and authorization for every route: sessions, API keys, ``require(permission)``.

Credentials, in order: ``X-API-Key: st_…`` or ``Authorization: Bearer st_…``, then the ``simpletuner_session``
cookie. A presented but bad credential is a 401 even if another one would work, so a client never silently
acts as someone else. Only :data:`PUBLIC_PATHS` skip authentication, and until the first admin exists every
other route answers 401 saying so: there is no open mode.

Store calls run on the event loop: they are single indexed SQLite statements (sub-millisecond, WAL readers
never block). Only the deliberately slow password KDF goes to a worker thread (:func:`run_kdf`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from simpletuner_core.auth import (
    ADMIN,
    API_KEY_PREFIX,
    ApiKey,
    User,
    has_permission,
    hash_token,
    key_prefix,
    new_session_token,
    permissions_for,
    tokens_equal,
)
from simpletuner_server.clients import client_ip
from simpletuner_server.keys import AUTH_KEY, PRINCIPAL_KEY, SETTINGS_KEY, STORE_KEY
from simpletuner_server.principal import Principal

T = TypeVar("T")

SESSION_COOKIE = "simpletuner_session"
SESSION_TTL = 7 * 24 * 3600.0
KEY_TOUCH_INTERVAL = 60.0  # last_used_at is refreshed at most this often: no write per API request
SETUP_TOKEN_HEADER = "X-Setup-Token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: The auth routes live under both prefixes (ours and the peer SimpleTuner server's).
AUTH_PREFIXES = ("/api/cloud/auth", "/api/auth")
PUBLIC_AUTH_PATHS = ("/setup/status", "/setup/first-admin", "/login",
                     "/registration", "/register")  # PUT /registration authenticates in its handler
#: The only paths served without credentials. Keep this the single list.
PUBLIC_PATHS: frozenset[str] = frozenset({
    "/health", "/api/version", "/openapi.json", "/docs", "/redoc",
    *(prefix + path for prefix in AUTH_PREFIXES for path in PUBLIC_AUTH_PATHS),
})
#: Static assets of the ``/docs`` and ``/redoc`` pages and of the dashboard (files only, nothing private).
PUBLIC_PREFIXES = ("/docs/static/", "/ui/static/")
FIRST_ADMIN_PATH = AUTH_PREFIXES[0] + "/setup/first-admin"
#: Remote workers' routes, authenticated with ``X-Worker-Token`` (see ``workers/auth.py``) instead.
WORKER_PREFIX = "/api/workers/"


def unauthorized(message: str = "Authentication required") -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(text=message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(permission: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(text=f"Permission denied: {permission}")


async def run_kdf(request: web.Request, func: Callable[..., T], *args: Any) -> T:
    """Run scrypt (hash or verify) in the default executor so the loop keeps serving, a few at a time."""
    async with request.app[AUTH_KEY].kdf_slots:
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc).isoformat()


def user_json(user: User, permissions: frozenset[str] | None = None) -> dict[str, Any]:
    """The public view of a user: never the password hash."""
    granted = permissions_for(user.levels) if permissions is None else permissions
    return {
        "id": user.id, "username": user.username, "email": user.email, "is_active": user.is_active,
        "is_admin": ADMIN in user.levels, "levels": list(user.levels), "permissions": sorted(granted),
        "created_at": iso(user.created_at), "updated_at": iso(user.updated_at),
        "last_login_at": iso(user.last_login_at),
    }


def key_json(key: ApiKey) -> dict[str, Any]:
    """The public view of an API key: its prefix, never the key or its hash."""
    return {
        "id": key.id, "name": key.name, "key_prefix": key.key_prefix, "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at), "expires_at": iso(key.expires_at), "is_active": key.is_active,
        "scoped_permissions": None if key.scoped_permissions is None else list(key.scoped_permissions),
    }


# --- resolving credentials ----------------------------------------------------------------------------------


def _presented_api_key(request: web.Request) -> str | None:
    key = request.headers.get("X-API-Key")
    if key is not None:
        return key.strip()
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _from_api_key(request: web.Request, presented: str, now: float) -> Principal:
    store = request.app[STORE_KEY]
    digest = hash_token(presented)
    match = None
    if presented.startswith(API_KEY_PREFIX):
        for candidate in store.find_api_keys(key_prefix(presented)):
            if tokens_equal(candidate.key_hash, digest):
                match = candidate
    if match is None or not match.is_active or (match.expires_at is not None and match.expires_at <= now):
        raise unauthorized("Invalid, revoked or expired API key")
    user = store.get_user(match.user_id)
    if user is None or not user.is_active:
        raise unauthorized("Invalid, revoked or expired API key")
    permissions = permissions_for(user.levels, match.scoped_permissions)
    if not has_permission(permissions_for(user.levels), "api.access"):
        raise web.HTTPForbidden(text="Permission denied: api.access")
    if match.last_used_at is None or now - match.last_used_at > KEY_TOUCH_INTERVAL:
        store.touch_api_key(match.id, now)
    return Principal(user=user, permissions=permissions, via="api_key", api_key_id=match.id,
                     scope=match.scoped_permissions)


def _from_session(request: web.Request, token: str, now: float) -> Principal:
    store = request.app[STORE_KEY]
    token_hash = hash_token(token)
    session = store.get_session(token_hash)
    if session is not None and session.expires_at <= now:
        store.delete_session(token_hash)
        session = None
    user = None if session is None else store.get_user(session.user_id)
    if user is None or not user.is_active:
        raise unauthorized("Session expired or invalid; log in again")
    return Principal(user=user, permissions=permissions_for(user.levels), via="session",
                     session_hash=token_hash)


def check_origin(request: web.Request) -> None:
    """Cross-origin guard for writes: browsers always send ``Origin`` on a cross-origin POST (SameSite=Lax alone
    still lets same-site pages, e.g. another port on localhost, post with the cookie)."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise web.HTTPForbidden(text="Cross-origin request refused")


def csrf_token(session_token: str) -> str:
    """The session's CSRF token: an HMAC keyed by the session secret, so nothing more is stored, it dies with
    the session, and a page on another origin (which cannot read the HttpOnly cookie) cannot compute it."""
    return hmac.new(session_token.encode(), b"simpletuner-csrf", hashlib.sha256).hexdigest()


def _from_browser(request: web.Request) -> bool:
    """Browsers mark every write with ``Origin`` (and ``Sec-Fetch-Site`` on trustworthy origins); scripts with a
    cookie jar (curl ``-b``, as in the tutorial) send neither, and no web page can make a browser omit them."""
    return "Origin" in request.headers or "Sec-Fetch-Site" in request.headers


def _check_csrf(request: web.Request, session_token: str) -> None:
    """Cookie-authenticated writes: same origin, and from a browser only with the session's CSRF token."""
    check_origin(request)
    if _from_browser(request):
        presented = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(presented.encode(), csrf_token(session_token).encode()):
            raise web.HTTPForbidden(text=f"CSRF token missing or wrong: send the {CSRF_HEADER} header "
                                         f"(GET /api/cloud/auth/me answers it for a session)")


def authenticate(request: web.Request) -> Principal | None:
    """The principal behind the request's credentials, None when it presents none; 401 when they are bad."""
    now = time.time()
    presented = _presented_api_key(request)
    if presented is not None:
        return _from_api_key(request, presented, now)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        principal = _from_session(request, token, now)
        if request.method not in SAFE_METHODS:
            _check_csrf(request, token)
        return principal
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Everything outside :data:`PUBLIC_PATHS` needs a principal; unknown paths too (no route probing)."""
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    if getattr(request.match_info.handler, "ui_page", False):
        # Dashboard pages authenticate themselves (ui/views.py ``gated``): a browser without a session is
        # redirected to the login page rather than shown a JSON 401; login/setup pages are public.
        return await handler(request)
    if request.path.startswith(WORKER_PREFIX):  # the agents' routes: their own token, never a user's
        from simpletuner_server.workers.auth import WORKER_KEY, authenticate_worker

        request[WORKER_KEY] = authenticate_worker(request)
        return await handler(request)
    if not request.app[AUTH_KEY].admin_exists(request.app[STORE_KEY]):
        raise unauthorized(f"No admin account exists yet: create the first admin with "
                           f"POST {FIRST_ADMIN_PATH}")
    principal = authenticate(request)
    if principal is None:
        raise unauthorized()
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


# --- helpers for route modules ------------------------------------------------------------------------------


def current_principal(request: web.Request) -> Principal:
    """The authenticated principal; 401 when a handler on a public path asks for one."""
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    if principal is None:
        raise unauthorized()
    return principal


def current_user(request: web.Request) -> User:
    return current_principal(request).user


def require(permission: str) -> Callable[[Handler], Handler]:
    """Decorator for handlers: 403 (JSON) unless the principal holds ``permission`` (``*`` holds all)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not current_principal(request).can(permission):
                raise forbidden(permission)
            return await handler(request)

        guarded.required_permission = permission  # type: ignore[attr-defined]  # for the OpenAPI generator
        return guarded

    return decorate


def _cookie_secure(request: web.Request) -> bool:
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.app[SETTINGS_KEY].trust_proxy and proto == "https"


def start_session(request: web.Request, response: web.StreamResponse, user: User) -> None:
    """A new random session whose sha256 alone is stored; the cookie is HttpOnly, SameSite=Lax, Path=/."""
    token = new_session_token()
    request.app[STORE_KEY].create_session(hash_token(token), user.id, time.time() + SESSION_TTL)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(SESSION_TTL), path="/", httponly=True,
                        samesite="Lax", secure=_cookie_secure(request))


def end_session(request: web.Request, response: web.StreamResponse) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        request.app[STORE_KEY].delete_session(hash_token(token))
    response.del_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Lax",
                        secure=_cookie_secure(request))


def rate_limited(request: web.Request) -> str:
    """The client's rate-limit key; raises 429 with ``Retry-After`` while it is over the failure budget."""
    ip = client_ip(request, request.app[SETTINGS_KEY].trust_proxy)
    retry = request.app[AUTH_KEY].limiter.retry_after(ip)
    if retry is not None:
        raise web.HTTPTooManyRequests(text=f"Too many failed attempts; retry in {retry} s",
                                      headers={"Retry-After": str(retry)})
    return ip


# --- lifecycle ----------------------------------------------------------------------------------------------


async def auth_context(app: web.Application) -> AsyncIterator[None]:
    """At start: drop expired sessions, and when no admin exists mint the one-time setup token (only its
    hash is kept; the plaintext goes to ``on_setup_token`` once, which the CLI prints)."""
    store, state = app[STORE_KEY], app[AUTH_KEY]
    store.purge_expired_sessions()
    if not state.admin_exists(store):
        token = secrets.token_urlsafe(32)
        state.setup_token_hash = hash_token(token)
        state.on_setup_token(token)
    yield
    state.setup_token_hash = None
