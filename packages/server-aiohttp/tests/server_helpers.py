"""Shared by the HTTP tests: a real 127.0.0.1 server with a client logged in as the first admin."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from simpletuner_core.plugins import get_registry
from simpletuner_server import create_app
from simpletuner_server.settings import ServerSettings

T = TypeVar("T")
ADMIN = {"email": "admin@example.com", "username": "admin", "password": "correct horse battery"}

needs_pixart = pytest.mark.skipif("pixart_sigma" not in get_registry().families,
                                  reason="the pixart plugin is not installed")


def serve_as_admin(home: Path, scenario: Callable[[TestClient], Awaitable[T]],
                   settings: ServerSettings | None = None) -> T:
    """Run ``scenario`` on a real 127.0.0.1 socket with ``client`` logged in as the first admin (``settings``
    default to a state directory at ``home``)."""

    async def main() -> T:
        app = create_app(settings or ServerSettings(home=home), on_setup_token=lambda token: None)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            resp = await client.post("/api/cloud/auth/setup/first-admin", json=ADMIN)
            assert resp.status == 201, await resp.text()
            return await scenario(client)

    return asyncio.run(main())


async def call(s: Any, method: str, path: str, **kw: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
    """(status, JSON body or text, response)."""
    resp = await s.request(method, path, **kw)
    text = await resp.text()
    try:
        body = json.loads(text) if text else None
    except json.JSONDecodeError:
        body = text
    return resp.status, body, resp



@contextlib.asynccontextmanager
async def as_user(admin: TestClient, username: str, levels: list[str]) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session logged in as a new user with ``levels`` (created through the admin client)."""
    password = "long enough password"
    resp = await admin.post("/api/users", json={"email": f"{username}@example.com", "username": username,
                                                "password": password, "level_names": levels})
    assert resp.status == 201, await resp.text()
    base = str(admin.make_url("/"))
    async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        resp = await session.post("/api/cloud/auth/login", json={"username": username, "password": password})
        assert resp.status == 200, await resp.text()
        yield session
