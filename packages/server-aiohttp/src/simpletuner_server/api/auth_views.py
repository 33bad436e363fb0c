"""Handlers for ``/api/cloud/auth/*`` (also under ``/api/auth/*``): setup, login, logout, me, API keys.

Response shapes follow the peer SimpleTuner server (``{"success": true, "user": …}``, key listings as arrays)
so its clients work unchanged.
"""

from __future__ import annotations

import time

from aiohttp import web

from simpletuner_core.auth import (
    ADMIN,
    KNOWN_PERMISSIONS,
    DuplicateUserError,
    dummy_hash,
    hash_password,
    hash_token,
    key_prefix,
    needs_rehash,
    new_api_key,
    verify_password,
)
from simpletuner_core.jobs.store import Store
from simpletuner_server import validation as v
from simpletuner_server.auth import (
    SESSION_COOKIE,
    SETUP_TOKEN_HEADER,
    check_origin,
    csrf_token,
    current_principal,
    end_session,
    key_json,
    rate_limited,
    require,
    run_kdf,
    start_session,
    unauthorized,
    user_json,
)
from simpletuner_server.clients import is_local_request
from simpletuner_server.keys import AUTH_KEY, SETTINGS_KEY, STORE_KEY

NEW_USER = v.Body({"email": v.email, "username": v.username, "password": v.password},
                  required=("email", "username", "password"))
LOGIN = v.Body({"username": v.text(254), "password": v.text(v.MAX_PASSWORD)}, required=("username", "password"))
NEW_KEY = v.Body({"name": v.text(100), "expires_days": v.integer(1, 3650), "scoped_permissions": v.string_list},
                 required=("name",))
INVALID_LOGIN = "Invalid username or password"
#: Store setting behind ``POST …/register`` (``api/registration_views.py``); off until an admin opens it.
REGISTRATION_SETTING = "registration_enabled"
SETUP_DONE = "Setup already completed: an admin account exists; log in instead"


def registration_enabled(store: Store) -> bool:
    return store.get_setting(REGISTRATION_SETTING, False) is True


async def setup_status(request: web.Request) -> web.Response:
    """Public, so a fresh install's UI or script can tell it must create the first admin."""
    store = request.app[STORE_KEY]
    has_admin = store.count_users(level=ADMIN, active_only=True) > 0
    return web.json_response({"needs_setup": not has_admin, "has_admin": has_admin,
                              "user_count": store.count_users(),
                              "registration_enabled": registration_enabled(store)})


async def first_admin(request: web.Request) -> web.Response:
    """Create the first admin and log them in. Only from the server's own machine or with the setup token, so
    whoever reaches a freshly exposed port first cannot claim the server."""
    store, state = request.app[STORE_KEY], request.app[AUTH_KEY]
    check_origin(request)
    ip = rate_limited(request)
    if state.admin_exists(store):
        raise web.HTTPConflict(text=SETUP_DONE)
    local = is_local_request(request, request.app[SETTINGS_KEY].trust_proxy)
    if not local and not state.setup_token_ok(request.headers.get(SETUP_TOKEN_HEADER)):
        state.limiter.record(ip)
        raise web.HTTPForbidden(text=f"The first admin can only be created from the server's machine, or "
                                     f"with the {SETUP_TOKEN_HEADER} header printed by `simpletuner server`")
    body = await v.read_json(request, NEW_USER)
    password_hash = await run_kdf(request, hash_password, body["password"])
    try:
        with store.transaction():  # write lock: two racing setups cannot both create an admin
            if store.count_users(level=ADMIN, active_only=True):
                raise web.HTTPConflict(text=SETUP_DONE)
            user = store.create_user(body["username"], body["email"], password_hash, levels=[ADMIN])
    except DuplicateUserError as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    state.admin_created()
    response = web.json_response({"success": True, "user": user_json(user),
                                  "message": "Admin account created successfully"}, status=201)
    start_session(request, response, user)
    return response


async def login(request: web.Request) -> web.Response:
    """Same message and one scrypt run whether or not the user exists; failures rate-limited per client."""
    store, limiter = request.app[STORE_KEY], request.app[AUTH_KEY].limiter
    check_origin(request)  # no login CSRF: another site cannot sign a browser into its own account
    ip = rate_limited(request)
    body = await v.read_json(request, LOGIN)
    limiter.record(ip)  # counted before the slow check so parallel guesses cannot overrun the budget
    user = store.find_user(body["username"])
    stored = user.password_hash if user is not None else dummy_hash()
    ok = await run_kdf(request, verify_password, body["password"], stored)
    if not ok or user is None or not user.is_active:
        raise unauthorized(INVALID_LOGIN)
    limiter.forgive(ip)
    fields: dict[str, object] = {"last_login_at": time.time()}
    if needs_rehash(user.password_hash):
        fields["password_hash"] = await run_kdf(request, hash_password, body["password"])
    user = store.update_user(user.id, **fields) or user
    response = web.json_response({"success": True, "user": user_json(user)})
    start_session(request, response, user)
    return response


async def logout(request: web.Request) -> web.Response:
    """Deletes the session row (the cookie alone is useless afterwards) and expires the cookie."""
    current_principal(request)
    response = web.json_response({"success": True})
    end_session(request, response)
    return response


async def me(request: web.Request) -> web.Response:
    """The caller with levels and effective permissions (narrowed by an API key's scope)."""
    principal = current_principal(request)
    body = user_json(principal.user, principal.permissions)
    body["auth_method"] = principal.via
    token = request.cookies.get(SESSION_COOKIE) if principal.via == "session" else None
    if token:
        body["csrf_token"] = csrf_token(token)  # for cookie clients that write from a browser
    return web.json_response(body)


def _scope(request: web.Request, requested: list[str] | None) -> list[str] | None:
    """A key may only narrow its creator's permissions; a scoped key cannot mint a broader one."""
    principal = current_principal(request)
    if requested is None:
        return None if principal.scope is None else list(principal.scope)
    unknown = [name for name in requested if name not in KNOWN_PERMISSIONS]
    if unknown:
        raise v.InvalidRequest([{"path": "scoped_permissions",
                                 "message": f"unknown permission(s): {', '.join(unknown)}"}])
    missing = [name for name in requested if not principal.can(name)]
    if missing:
        message = f"cannot grant permission(s) you do not hold: {', '.join(missing)}"
        raise v.InvalidRequest([{"path": "scoped_permissions", "message": message}])
    return requested


@require("api.keys.own")
async def create_api_key(request: web.Request) -> web.Response:
    """The key is in this response only; the store keeps its sha256 and its clear ``st_xxxxxxxx`` prefix."""
    body = await v.read_json(request, NEW_KEY)
    scope = _scope(request, body.get("scoped_permissions"))
    expires_at = time.time() + body["expires_days"] * 86400 if "expires_days" in body else None
    key = new_api_key()
    record = request.app[STORE_KEY].create_api_key(current_principal(request).user.id, body["name"].strip(),
                                                   key_prefix(key), hash_token(key), scope, expires_at)
    return web.json_response({"key": key, "key_info": key_json(record)}, status=201)


async def list_api_keys(request: web.Request) -> web.Response:
    """Own keys, revoked ones included (``is_active`` false); anyone may see and revoke what they own."""
    keys = request.app[STORE_KEY].list_api_keys(current_principal(request).user.id)
    return web.json_response([key_json(key) for key in keys])


async def revoke_api_key(request: web.Request) -> web.Response:
    """Own keys; any key with ``api.keys.all`` (admins). Others' keys answer 404, not 403: no id probing."""
    store, principal = request.app[STORE_KEY], current_principal(request)
    key = store.get_api_key(int(request.match_info["key_id"]))
    if key is None or (key.user_id != principal.user.id and not principal.can("api.keys.all")):
        raise web.HTTPNotFound(text="API key not found")
    if not store.revoke_api_key(key.id):
        raise web.HTTPNotFound(text="API key not found or already revoked")
    return web.json_response({"success": True})
