"""Self-registration (SimpleTuner's "Manage Users → Registration" switch): off by default; while an admin has it
on, anyone who reaches the server may create an active ``viewer`` account (read-only) for an admin to promote.

Served under both auth prefixes. ``GET …/registration`` and ``POST …/register`` are public (in
``auth.PUBLIC_AUTH_PATHS``). The auth middleware skips every method on a public path, so ``PUT …/registration``
authenticates explicitly in its handler.
"""

from __future__ import annotations

from aiohttp import web

from simpletuner_core.auth import DuplicateUserError, hash_password
from simpletuner_core.jobs.store import Store
from simpletuner_server import validation as v
from simpletuner_server.api.auth_views import NEW_USER, REGISTRATION_SETTING, registration_enabled
from simpletuner_server.api_spec import accepts
from simpletuner_server.auth import (
    authenticate,
    check_origin,
    forbidden,
    rate_limited,
    run_kdf,
    unauthorized,
    user_json,
)
from simpletuner_server.keys import AUTH_KEY, STORE_KEY
from simpletuner_server.principal import Principal

DEFAULT_LEVEL = "viewer"  # least privilege: an admin promotes whom they trust
MANAGE = "user.manage"
SWITCH = v.Body({"enabled": v.boolean}, required=("enabled",))


def _state(store: Store) -> dict[str, object]:
    return {"enabled": registration_enabled(store), "default_level": DEFAULT_LEVEL}


def _manager(request: web.Request) -> Principal:
    """The caller, if they may manage users: 401 without credentials, 403 without ``user.manage``. Needed here
    because this path is public for GET, and the middleware lets every method on a public path through."""
    principal = authenticate(request)  # also the session's CSRF/origin checks for a cookie write
    if principal is None:
        raise unauthorized()
    if not principal.can(MANAGE):
        raise forbidden(MANAGE)
    return principal


@accepts(tag="auth")
async def get_registration(request: web.Request) -> web.Response:
    """Whether self-registration is open (public, so a login page can offer it) and the level it grants."""
    return web.json_response(_state(request.app[STORE_KEY]))


@accepts(body=SWITCH, tag="auth")
async def set_registration(request: web.Request) -> web.Response:
    """Open or close self-registration; admins only (``user.manage``, checked here: the path is public)."""
    _manager(request)
    body = await v.read_json(request, SWITCH)
    store = request.app[STORE_KEY]
    store.set_setting(REGISTRATION_SETTING, body["enabled"])
    return web.json_response(_state(store))


set_registration.required_permission = MANAGE  # type: ignore[attr-defined]  # documents what _manager checks


@accepts(body=NEW_USER, tag="auth")
async def register(request: web.Request) -> web.Response:
    """Create an active viewer account while registration is open; it does not log the new user in.

    Attempts are rate-limited per client like logins (refused ones count), so the switch cannot be probed or
    account names enumerated fast.
    """
    store, limiter = request.app[STORE_KEY], request.app[AUTH_KEY].limiter
    check_origin(request)
    ip = rate_limited(request)
    body = await v.read_json(request, NEW_USER)
    limiter.record(ip)  # counted before the slow hash; forgiven on success
    if not registration_enabled(store):
        raise web.HTTPForbidden(text="Registration is disabled")
    password_hash = await run_kdf(request, hash_password, body["password"])
    try:
        user = store.create_user(body["username"], body["email"], password_hash, levels=[DEFAULT_LEVEL])
    except DuplicateUserError as exc:
        raise web.HTTPConflict(text=f"A user with this {exc.field} already exists") from None
    limiter.forgive(ip)
    return web.json_response({"success": True, "user": user_json(user)}, status=201)
