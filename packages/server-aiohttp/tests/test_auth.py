"""Authentication over real sockets: the tutorial's curl sequence end to end, then each rule on its own.

Clients: ``client`` (aiohttp's TestClient, whose jar keeps the first admin's cookie), extra sessions with
their own jar (a "browser" logging in), and a jar-less session for anonymous and API-key calls.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from simpletuner_core.auth import KNOWN_PERMISSIONS, verify_password
from simpletuner_server import create_app
from simpletuner_server.auth import PUBLIC_PATHS, SESSION_COOKIE
from simpletuner_server.clients import RateLimiter, client_ip, is_local_request, is_loopback
from simpletuner_server.settings import ServerSettings

T = TypeVar("T")
AUTH = "/api/cloud/auth"
ADMIN = {"email": "admin@example.com", "username": "admin", "password": "correct horse battery"}
RESEARCHER = {"email": "ada@example.com", "username": "ada", "password": "analytical-engine",
              "level_names": ["researcher"]}


def serve(app: web.Application, scenario: Callable[[TestClient], Awaitable[T]]) -> T:
    """Run ``scenario`` against ``app`` listening on a real 127.0.0.1 socket."""

    async def main() -> T:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            return await scenario(client)

    return asyncio.run(main())


def make_app(home: Path, tokens: list[str] | None = None, **settings: Any) -> web.Application:
    sink = tokens.append if tokens is not None else (lambda token: None)
    return create_app(ServerSettings(home=home, **settings), on_setup_token=sink)


@asynccontextmanager
async def session(client: TestClient, jar: bool = True) -> AsyncIterator[aiohttp.ClientSession]:
    """A separate HTTP client on the same server: its own cookie jar (a browser) or none (curl)."""
    cookie_jar: aiohttp.abc.AbstractCookieJar = (
        aiohttp.CookieJar(unsafe=True) if jar else aiohttp.DummyCookieJar())
    async with aiohttp.ClientSession(base_url=str(client.make_url("/")), cookie_jar=cookie_jar) as s:
        yield s


async def status_json(resp: aiohttp.ClientResponse) -> tuple[int, Any]:
    return resp.status, await resp.json()


def session_cookie(s: aiohttp.ClientSession | TestClient) -> str:
    jar = s.session.cookie_jar if isinstance(s, TestClient) else s.cookie_jar
    return next(c.value for c in jar if c.key == SESSION_COOKIE)


def test_tutorial_sequence(tmp_path: Path) -> None:
    seen: list[str] = []  # every response body, to prove no password ever comes back

    async def call(s: Any, method: str, path: str, **kw: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        resp = await s.request(method, path, **kw)
        text = await resp.text()
        seen.append(text)
        return resp.status, (await resp.json() if text else None), resp

    async def scenario(client: TestClient) -> dict[str, str]:
        status, body, _ = await call(client, "GET", f"{AUTH}/setup/status")
        assert (status, body) == (200, {"needs_setup": True, "has_admin": False, "user_count": 0,
                                        "registration_enabled": False})
        status, body, resp = await call(client, "GET", "/api/plugins")
        assert status == 401 and "first admin" in body["error"]["message"]
        assert resp.headers["WWW-Authenticate"] == "Bearer"

        # First admin from loopback: 201, the user, a session cookie with the right attributes.
        status, body, resp = await call(client, "POST", f"{AUTH}/setup/first-admin", json=ADMIN)
        assert status == 201, body
        assert body["message"] == "Admin account created successfully"
        assert body["user"]["username"] == "admin" and body["user"]["levels"] == ["admin"]
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        for attribute in ("HttpOnly", "SameSite=Lax", "Path=/"):
            assert attribute in cookie, cookie
        status, body, _ = await call(client, "POST", f"{AUTH}/setup/first-admin", json=ADMIN)
        assert status == 409 and body["error"]["status"] == 409
        _, body, _ = await call(client, "GET", f"{AUTH}/setup/status")
        assert body == {"needs_setup": False, "has_admin": True, "user_count": 1,
                        "registration_enabled": False}

        async with session(client) as browser, session(client, jar=False) as curl:
            # Login with a cookie jar, as the tutorial's `curl -c cookies.txt` does.
            status, body, _ = await call(browser, "POST", f"{AUTH}/login",
                                         json={"username": "admin", "password": ADMIN["password"]})
            assert status == 200 and body["user"]["username"] == "admin"
            status, body, _ = await call(browser, "GET", f"{AUTH}/me")
            assert status == 200 and body["levels"] == ["admin"] and body["permissions"] == ["*"]

            status, body, _ = await call(browser, "POST", f"{AUTH}/api-keys", json={"name": "automation-key"})
            assert status == 201, body
            key, info = body["key"], body["key_info"]
            assert key.startswith("st_") and len(key) > 40
            assert set(info) == {"id", "name", "key_prefix", "created_at", "last_used_at", "expires_at",
                                 "is_active", "scoped_permissions"}
            assert info["name"] == "automation-key" and info["is_active"]
            assert key.startswith(info["key_prefix"])
            status, listing, _ = await call(browser, "GET", "/api/auth/api-keys")  # the peer's prefix too
            assert status == 200 and [k["id"] for k in listing] == [info["id"]]
            assert key not in seen[-1] and "hash" not in seen[-1]

            for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
                status, body, _ = await call(curl, "GET", f"{AUTH}/me", headers=headers)
                assert status == 200 and body["username"] == "admin" and body["auth_method"] == "api_key"
            status, body, _ = await call(curl, "GET", f"{AUTH}/me", headers={"X-API-Key": key + "x"})
            assert status == 401

            # Users: a researcher, who cannot manage users.
            status, body, _ = await call(curl, "POST", "/api/users", json=RESEARCHER,
                                         headers={"X-API-Key": key})
            assert status == 201, body
            ada_id = body["id"]
            assert body["levels"] == ["researcher"] and "job.submit" in body["permissions"]
            status, body, _ = await call(client, "POST", "/api/users",
                                         json={**RESEARCHER, "username": "ADA", "email": "other@example.com"})
            assert status == 409 and "username" in body["error"]["message"]
            status, body, _ = await call(client, "POST", "/api/users", json={
                **RESEARCHER, "username": "bob", "email": "bob@example.com", "level_names": ["wizard"]})
            assert status == 422
            assert body["error"]["errors"][0]["path"] == "level_names"
            assert "wizard" in body["error"]["message"]

            async with session(client) as ada:
                status, _, _ = await call(ada, "POST", f"{AUTH}/login",
                                          json={"username": "ada", "password": RESEARCHER["password"]})
                assert status == 200
                status, body, _ = await call(ada, "POST", "/api/users", json={
                    **RESEARCHER, "username": "eve", "email": "eve@example.com"})
                assert status == 403
                assert body == {"error": {"status": 403, "message": "Permission denied: user.manage"}}
                assert (await call(ada, "GET", f"/api/users/{ada_id}"))[0] == 200
                assert (await call(ada, "GET", "/api/users/1"))[0] == 403
                assert (await call(ada, "GET", "/api/users"))[0] == 403

            # Revoke the key: it stops working, and the listing shows it inactive.
            status, body, _ = await call(browser, "DELETE", f"{AUTH}/api-keys/{info['id']}")
            assert (status, body) == (200, {"success": True})
            status, body, resp = await call(curl, "GET", f"{AUTH}/me", headers={"X-API-Key": key})
            assert status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
            _, listing, _ = await call(browser, "GET", f"{AUTH}/api-keys")
            assert listing[0]["is_active"] is False

            # Logout: the old cookie value is dead server-side, not just dropped from the jar.
            old = session_cookie(browser)
            status, body, _ = await call(browser, "POST", f"{AUTH}/logout")
            assert (status, body) == (200, {"success": True})
            assert (await call(browser, "GET", f"{AUTH}/me"))[0] == 401
            status, body, _ = await call(curl, "GET", f"{AUTH}/me",
                                         headers={"Cookie": f"{SESSION_COOKIE}={old}"})
            assert status == 401

            # Unauthenticated: 401 + WWW-Authenticate on real and unknown routes alike.
            for path in ("/api/users", "/api/plugins", "/api/no/such/route"):
                status, body, resp = await call(curl, "GET", path)
                assert status == 401
                assert body == {"error": {"status": 401, "message": "Authentication required"}}
                assert resp.headers["WWW-Authenticate"] == "Bearer"

            # Wrong credentials: one message whether or not the user exists, then 429 for this client.
            for username in ("admin", "nobody"):
                status, body, _ = await call(curl, "POST", f"{AUTH}/login",
                                             json={"username": username, "password": "wrong password"})
                assert (status, body["error"]["message"]) == (401, "Invalid username or password")
            for _ in range(3):
                assert (await call(curl, "POST", f"{AUTH}/login",
                                   json={"username": "admin", "password": "nope nope"}))[0] == 401
            status, body, resp = await call(curl, "POST", f"{AUTH}/login",
                                            json={"username": "admin", "password": ADMIN["password"]})
            assert status == 429 and body["error"]["status"] == 429
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
        return {"key": key, "session": old}

    secrets_out = serve(make_app(tmp_path), scenario)
    passwords = [ADMIN["password"], RESEARCHER["password"]]
    assert not [p for p in passwords if any(p in text for text in seen)]
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("state.db*"))  # the WAL holds recent writes
    assert b"scrypt$" in raw  # the right file: hashes are there...
    for secret in [*passwords, *secrets_out.values()]:
        assert secret.encode() not in raw, secret  # ...and no password, API key or session token in clear


def test_first_admin_from_non_loopback_needs_the_setup_token(tmp_path: Path) -> None:
    """A loopback peer carrying X-Forwarded-For is a proxy on this host (trust_proxy off): not local."""
    tokens: list[str] = []
    proxied = {"X-Forwarded-For": "203.0.113.7"}

    async def scenario(client: TestClient) -> None:
        [token] = tokens
        resp = await client.post(f"{AUTH}/setup/first-admin", json=ADMIN, headers=proxied)
        assert resp.status == 403 and "X-Setup-Token" in (await resp.json())["error"]["message"]
        wrong = token[:-1] + ("B" if token.endswith("A") else "A")
        resp = await client.post(f"{AUTH}/setup/first-admin", json=ADMIN,
                                 headers={**proxied, "X-Setup-Token": wrong})
        assert resp.status == 403
        with_token = {**proxied, "X-Setup-Token": token}
        resp = await client.post(f"{AUTH}/setup/first-admin", json=ADMIN, headers=with_token)
        assert resp.status == 201, await resp.text()
        resp = await client.post(f"{AUTH}/setup/first-admin", json=ADMIN, headers=with_token)
        assert resp.status == 409  # one-time: setup is over

    serve(make_app(tmp_path, tokens), scenario)


def test_trust_proxy_uses_the_forwarded_client(tmp_path: Path) -> None:
    tokens: list[str] = []

    async def scenario(client: TestClient) -> None:
        resp = await client.post(f"{AUTH}/setup/first-admin", json=ADMIN,
                                 headers={"X-Forwarded-For": "127.0.0.1, 198.51.100.4"})
        assert resp.status == 403
        resp = await client.post(f"{AUTH}/setup/first-admin", json=ADMIN,
                                 headers={"X-Forwarded-For": "198.51.100.4, 127.0.0.1"})
        assert resp.status == 201

    serve(make_app(tmp_path, tokens, trust_proxy=True), scenario)


def _request(peer: str, headers: dict[str, str] | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = (
        lambda name, default=None: (peer, 1234) if name == "peername" else default)
    return make_mocked_request("POST", "/", headers=headers or {}, transport=transport)


def test_loopback_and_client_address_checks() -> None:
    for address in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert is_loopback(address), address
    for address in ("203.0.113.7", "10.0.0.1", "::ffff:10.0.0.1", "fe80::1%eth0", "", None, "localhost"):
        assert not is_loopback(address), address
    assert is_local_request(_request("127.0.0.1"), trust_proxy=False)
    assert not is_local_request(_request("203.0.113.7"), trust_proxy=False)
    assert not is_local_request(_request("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}), trust_proxy=False)
    assert not is_local_request(_request("127.0.0.1", {"Forwarded": "for=1.2.3.4"}), trust_proxy=False)
    assert not is_local_request(_request("203.0.113.7", {"X-Forwarded-For": "127.0.0.1"}), trust_proxy=False)
    via_proxy = {"X-Forwarded-For": "1.2.3.4, 127.0.0.1"}
    assert is_local_request(_request("127.0.0.1", via_proxy), trust_proxy=True)
    assert client_ip(_request("127.0.0.1", {"X-Forwarded-For": "1.2.3.4"}), trust_proxy=False) == "127.0.0.1"
    two_hops = {"X-Forwarded-For": "9.9.9.9, 1.2.3.4"}
    assert client_ip(_request("127.0.0.1", two_hops), trust_proxy=True) == "1.2.3.4"


def test_rate_limiter_window_and_forgiveness() -> None:
    now = [1000.0]
    limiter = RateLimiter(max_failures=3, window=60, max_keys=2, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("a") is None
        limiter.record("a")
    assert limiter.retry_after("a") == 60
    limiter.forgive("a")
    assert limiter.retry_after("a") is None
    limiter.record("a")
    now[0] += 59.5
    assert limiter.retry_after("a") == 1
    now[0] += 1
    assert limiter.retry_after("a") is None  # the window slid past the first failures
    limiter.record("b")
    limiter.record("c")  # over max_keys: the least recently failing key ("a") is forgotten
    assert "a" not in limiter._failures


def test_login_costs_one_kdf_run_whether_or_not_the_user_exists(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: every failed login runs the real scrypt verification exactly once, on a real hash."""
    from simpletuner_server.api import auth_views

    runs: list[str] = []

    def counting_verify(password: str, stored: str) -> bool:
        runs.append(stored.rsplit("$", 2)[0])  # scheme and cost parameters
        return verify_password(password, stored)

    monkeypatch.setattr(auth_views, "verify_password", counting_verify)

    async def scenario(client: TestClient) -> None:
        assert (await client.post(f"{AUTH}/setup/first-admin", json=ADMIN)).status == 201
        for username in ("admin", "nobody"):
            resp = await client.post(f"{AUTH}/login", json={"username": username, "password": "wrong password"})
            assert (await resp.json())["error"]["message"] == "Invalid username or password"
        assert len(runs) == 2 and runs[0] == runs[1], runs  # the unknown user paid for the same KDF too

    serve(make_app(tmp_path), scenario)


def test_user_management_rules(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        assert (await client.post(f"{AUTH}/setup/first-admin", json=ADMIN)).status == 201
        me = (await (await client.get(f"{AUTH}/me")).json())["id"]
        # The only admin can neither leave, be demoted nor be deactivated.
        assert (await client.delete(f"/api/users/{me}")).status == 409
        assert (await client.patch(f"/api/users/{me}", json={"level_names": ["viewer"]})).status == 409
        assert (await client.put(f"/api/users/{me}", json={"is_active": False})).status == 409

        resp = await client.post("/api/users", json={**RESEARCHER, "level_names": ["admin"]})
        other = (await resp.json())["id"]
        resp = await client.patch(f"/api/users/{other}", json={"email": ADMIN["email"].upper()})
        assert resp.status == 409
        resp = await client.patch(f"/api/users/{other}", json={"level_names": ["viewer"], "pasword": "x"})
        assert resp.status == 422 and (await resp.json())["error"]["errors"] == [
            {"path": "pasword", "message": "unknown field", "did_you_mean": "password"}]
        resp = await client.put(f"/api/users/{other}", json={"level_names": ["viewer"]})
        assert resp.status == 200 and (await resp.json())["levels"] == ["viewer"]
        bad = await client.post("/api/users", json={"email": "nope", "username": "x", "password": "short"})
        paths = sorted(e["path"] for e in (await bad.json())["error"]["errors"])
        assert bad.status == 422 and paths == ["email", "password", "username"]

        async with session(client) as ada, session(client, jar=False) as curl:
            login = {"username": "ADA@example.com", "password": RESEARCHER["password"]}  # email, any case
            assert (await ada.post(f"{AUTH}/login", json=login)).status == 200
            assert (await ada.get(f"{AUTH}/me")).status == 200
            # A viewer cannot mint keys; the admin changes the password: old sessions end, old password fails.
            assert (await ada.post(f"{AUTH}/api-keys", json={"name": "k"})).status == 403
            resp = await client.patch(f"/api/users/{other}", json={"password": "a brand new secret",
                                                                   "level_names": ["researcher"]})
            assert resp.status == 200
            assert (await ada.get(f"{AUTH}/me")).status == 401
            assert (await curl.post(f"{AUTH}/login", json=login)).status == 401
            login["password"] = "a brand new secret"
            assert (await ada.post(f"{AUTH}/login", json=login)).status == 200
            key = (await (await ada.post(f"{AUTH}/api-keys", json={"name": "k"})).json())["key"]
            assert (await curl.get(f"{AUTH}/me", headers={"X-API-Key": key})).status == 200
            # Inactive users can neither log in nor use their keys.
            assert (await client.patch(f"/api/users/{other}", json={"is_active": False})).status == 200
            assert (await curl.get(f"{AUTH}/me", headers={"X-API-Key": key})).status == 401
            assert (await ada.get(f"{AUTH}/me")).status == 401
            assert (await curl.post(f"{AUTH}/login", json=login)).status == 401
            # Deleting a user takes their keys with them.
            assert (await client.delete(f"/api/users/{other}")).status == 200
            assert (await client.get(f"/api/users/{other}")).status == 404
            assert (await client.delete(f"/api/users/{other}")).status == 404

    serve(make_app(tmp_path), scenario)


def test_scoped_keys_and_cross_origin_writes(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        assert (await client.post(f"{AUTH}/setup/first-admin", json=ADMIN)).status == 201
        assert (await client.post("/api/users", json=RESEARCHER)).status == 201
        async with session(client) as ada, session(client, jar=False) as curl:
            await ada.post(f"{AUTH}/login", json={"username": "ada", "password": RESEARCHER["password"]})
            resp = await ada.post(f"{AUTH}/api-keys",
                                  json={"name": "ro", "scoped_permissions": ["config.view"]})
            scoped = (await resp.json())["key"]
            body = await (await curl.get(f"{AUTH}/me", headers={"X-API-Key": scoped})).json()
            assert body["permissions"] == ["config.view"]
            # A scoped key cannot mint a key (no api.keys.own in its scope); no one can exceed their grants.
            resp = await curl.post(f"{AUTH}/api-keys", json={"name": "x"}, headers={"X-API-Key": scoped})
            assert resp.status == 403
            for scope in (["user.manage"], ["no.such.permission"]):
                resp = await ada.post(f"{AUTH}/api-keys", json={"name": "x", "scoped_permissions": scope})
                assert resp.status == 422 and scope[0] in (await resp.json())["error"]["message"]
            # Others' keys look nonexistent; the admin may revoke any key.
            key_id = (await (await ada.get(f"{AUTH}/api-keys")).json())[0]["id"]
            resp = await ada.post(f"{AUTH}/api-keys", json={"name": "expiring", "expires_days": 3})
            expires = datetime.fromisoformat((await resp.json())["key_info"]["expires_at"])
            assert abs(expires.timestamp() - (time.time() + 3 * 86400)) < 60
            assert (await client.delete(f"{AUTH}/api-keys/{key_id}")).status == 200
            assert (await curl.get(f"{AUTH}/me", headers={"X-API-Key": scoped})).status == 401
            # Cookie-authenticated writes from another origin are refused; same-origin browser writes pass with
            # the session's CSRF token (test_ui_pages.py covers the token rules in full).
            host = client.make_url("/").authority
            token = (await (await ada.get(f"{AUTH}/me")).json())["csrf_token"]
            resp = await ada.post(f"{AUTH}/api-keys", json={"name": "csrf"},
                                  headers={"Origin": "http://evil.test", "X-CSRF-Token": token})
            assert resp.status == 403
            resp = await ada.post(f"{AUTH}/api-keys", json={"name": "ok"},
                                  headers={"Origin": f"http://{host}", "X-CSRF-Token": token})
            assert resp.status == 201

    serve(make_app(tmp_path), scenario)


def test_expired_session_is_refused_and_removed(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        assert (await client.post(f"{AUTH}/setup/first-admin", json=ADMIN)).status == 201
        assert (await client.get(f"{AUTH}/me")).status == 200
        with sqlite3.connect(tmp_path / "state.db") as db:
            db.execute("UPDATE sessions SET expires_at = 0")
        resp = await client.get(f"{AUTH}/me")
        assert resp.status == 401 and "log in again" in (await resp.json())["error"]["message"]
        with sqlite3.connect(tmp_path / "state.db") as db:
            assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0

    serve(make_app(tmp_path), scenario)


def test_public_paths_and_required_permissions_are_consistent(tmp_path: Path) -> None:
    """Each public path is a route; each ``require`` names a known permission."""
    app = make_app(tmp_path)
    paths = {resource.canonical for resource in app.router.resources()}
    assert PUBLIC_PATHS <= paths
    required = {getattr(route.handler, "required_permission", None) for route in app.router.routes()} - {None}
    assert required and required <= KNOWN_PERMISSIONS, required - KNOWN_PERMISSIONS
