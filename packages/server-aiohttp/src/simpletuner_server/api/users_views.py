"""``/api/users``: account management, admin only (``user.manage``) except reading your own record.

The last active admin can be neither deleted, demoted nor deactivated, and nobody deletes or deactivates
themselves: the server must never end up without someone able to manage it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from simpletuner_core.auth import ADMIN, DuplicateUserError, User, hash_password
from simpletuner_core.jobs.store import Store
from simpletuner_server import validation as v
from simpletuner_server.auth import current_principal, forbidden, require, run_kdf, user_json
from simpletuner_server.keys import STORE_KEY

DEFAULT_LEVELS = ["viewer"]  # least privilege when an admin does not say
CREATE_USER = v.Body({"email": v.email, "username": v.username, "password": v.password,
                      "level_names": v.level_names, "is_active": v.boolean},
                     required=("email", "username", "password"))
UPDATE_USER = v.Body({"email": v.email, "password": v.password, "level_names": v.level_names,
                      "is_active": v.boolean})


def _user_id(request: web.Request) -> int:
    return int(request.match_info["user_id"])


def _get(store: Store, user_id: int) -> User:
    user = store.get_user(user_id)
    if user is None:
        raise web.HTTPNotFound(text=f"User {user_id} not found")
    return user


def _is_active_admin(user: User) -> bool:
    return user.is_active and ADMIN in user.levels


def _keep_an_admin(store: Store, user: User) -> None:
    """Call inside a transaction before ``user`` stops being an active admin."""
    if _is_active_admin(user) and store.count_users(level=ADMIN, active_only=True) <= 1:
        raise web.HTTPConflict(text="Cannot remove the last active admin")


def _conflict(exc: DuplicateUserError) -> web.HTTPConflict:
    return web.HTTPConflict(text=f"A user with this {exc.field} already exists")


@require("user.manage")
async def create_user(request: web.Request) -> web.Response:
    body = await v.read_json(request, CREATE_USER)
    password_hash = await run_kdf(request, hash_password, body["password"])
    try:
        user = request.app[STORE_KEY].create_user(
            body["username"], body["email"], password_hash, levels=body.get("level_names", DEFAULT_LEVELS),
            is_active=body.get("is_active", True))
    except DuplicateUserError as exc:
        raise _conflict(exc) from None
    return web.json_response(user_json(user), status=201)


@require("user.manage")
async def list_users(request: web.Request) -> web.Response:
    return web.json_response([user_json(user) for user in request.app[STORE_KEY].list_users()])


async def get_user(request: web.Request) -> web.Response:
    """Anyone may read their own record; other records need ``user.manage`` (403 before any 404)."""
    principal, user_id = current_principal(request), _user_id(request)
    if user_id != principal.user.id and not principal.can("user.manage"):
        raise forbidden("user.manage")
    return web.json_response(user_json(_get(request.app[STORE_KEY], user_id)))


@require("user.manage")
async def update_user(request: web.Request) -> web.Response:
    """PUT and PATCH both update only the fields given. A password change or deactivation ends the user's
    other sessions (API keys stop working for inactive users without being revoked)."""
    store, principal, user_id = request.app[STORE_KEY], current_principal(request), _user_id(request)
    body = await v.read_json(request, UPDATE_USER)
    fields: dict[str, Any] = {}
    if "password" in body:
        fields["password_hash"] = await run_kdf(request, hash_password, body["password"])
    if "email" in body:
        fields["email"] = body["email"]
    if "level_names" in body:
        fields["levels"] = body["level_names"]
    if "is_active" in body:
        fields["is_active"] = body["is_active"]
    try:
        with store.transaction():  # the last-admin check and the write see the same state
            target = _get(store, user_id)
            if target.id == principal.user.id and fields.get("is_active") is False:
                raise web.HTTPConflict(text="You cannot deactivate yourself")
            levels = fields.get("levels", target.levels)
            if not (fields.get("is_active", target.is_active) and ADMIN in levels):
                _keep_an_admin(store, target)
            user = store.update_user(user_id, **fields) if fields else target
            if user is not None and ("password_hash" in fields or not user.is_active):
                store.delete_user_sessions(user_id, keep=principal.session_hash)
    except DuplicateUserError as exc:
        raise _conflict(exc) from None
    assert user is not None
    return web.json_response(user_json(user))


@require("user.manage")
async def delete_user(request: web.Request) -> web.Response:
    store, principal, user_id = request.app[STORE_KEY], current_principal(request), _user_id(request)
    if user_id == principal.user.id:
        raise web.HTTPConflict(text="You cannot delete yourself")
    with store.transaction():
        _keep_an_admin(store, _get(store, user_id))
        store.delete_user(user_id)
    return web.json_response({"success": True})
