"""The server foundation over real sockets: JSON everywhere, limits, headers, registry, no torch.

Every app gets its own ``home`` (the store opens at startup); routes other than the public ones need a login,
which ``as_admin`` provides by creating the first admin from loopback (the session cookie lands in the jar).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import simpletuner_server
from simpletuner_core.plugins import get_registry, reset_plugin_manager
from simpletuner_server import create_app
from simpletuner_server.settings import ServerSettings

T = TypeVar("T")
SECURITY = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    """Each test sees a registry built from the installed entry points, not one left by another test."""
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def serve(app: web.Application, scenario: Callable[[TestClient], Awaitable[T]]) -> T:
    """Run ``scenario`` against ``app`` listening on a real 127.0.0.1 socket (no pytest-aiohttp needed)."""

    async def main() -> T:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            return await scenario(client)

    return asyncio.run(main())


@pytest.fixture
def settings(tmp_path: Path) -> Callable[..., ServerSettings]:
    def make(**kw: Any) -> ServerSettings:
        return ServerSettings(home=tmp_path / "home", **kw)

    return make


async def as_admin(client: TestClient) -> None:
    admin = {"email": "root@example.com", "username": "root", "password": "hunter2hunter2"}
    resp = await client.post("/api/cloud/auth/setup/first-admin", json=admin)
    assert resp.status == 201, await resp.text()


def test_health_is_json_with_version_and_security_headers(settings: Callable[..., ServerSettings]) -> None:
    async def scenario(client: TestClient) -> None:
        resp = await client.get("/health")
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == {"status": "ok", "version": simpletuner_server.__version__}
        for name, value in SECURITY.items():
            assert resp.headers[name] == value

        resp = await client.get("/api/version")
        assert resp.status == 200
        body = await resp.json()
        assert body["version"] == simpletuner_server.__version__ and "core_version" in body

    serve(create_app(settings()), scenario)


def test_unknown_route_is_json_404_with_security_headers(settings: Callable[..., ServerSettings]) -> None:
    async def scenario(client: TestClient) -> None:
        await as_admin(client)
        resp = await client.get("/no/such/thing")
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert await resp.json() == {"error": {"status": 404, "message": "Not Found"}}
        for name, value in SECURITY.items():
            assert resp.headers[name] == value

    serve(create_app(settings()), scenario)


def test_wrong_method_is_json_405_keeping_allow_header(settings: Callable[..., ServerSettings]) -> None:
    async def scenario(client: TestClient) -> None:
        resp = await client.post("/health", data=b"x")
        assert resp.status == 405
        assert (await resp.json())["error"]["status"] == 405
        assert "GET" in resp.headers["Allow"]

    serve(create_app(settings()), scenario)


def test_declared_body_over_limit_is_json_413(settings: Callable[..., ServerSettings]) -> None:
    async def scenario(client: TestClient) -> None:
        resp = await client.post("/health", data=b"x" * 2048)
        assert resp.status == 413
        body = await resp.json()
        assert body["error"]["status"] == 413
        assert "1024" in body["error"]["message"]

    serve(create_app(settings(max_body_bytes=1024)), scenario)


def test_chunked_body_over_client_max_size_is_json_413(settings: Callable[..., ServerSettings]) -> None:
    """No Content-Length: the limit is enforced by ``client_max_size`` when a handler reads the body."""
    app = create_app(settings(max_body_bytes=1024))

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"size": len(await request.read())})

    app.router.add_post("/echo", echo)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 512

    async def scenario(client: TestClient) -> None:
        await as_admin(client)
        ok = await client.post("/echo", data=b"z" * 100)
        assert await ok.json() == {"size": 100}
        resp = await client.post("/echo", data=chunks())
        assert resp.status == 413
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"]["status"] == 413

    serve(app, scenario)


def test_json_bodies_stop_at_one_mib_by_default_and_the_dataloader_route_allows_more(tmp_path: Path) -> None:
    """Real routes with the default settings: a config save over 1 MiB is a JSON 413 whether it declares its
    length or streams chunked; the dataloader save takes the same 1.5 MiB body (its limit is 16 MiB)."""
    over = 2**20 + 1024

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start:start + 64 * 1024]

    async def scenario(client: TestClient) -> None:
        await as_admin(client)
        resp = await client.post("/api/configs/environments",
                                 json={"name": "big", "model_family": "pixart_sigma"})
        assert resp.status == 201, await resp.text()
        config = json.dumps({"config": {"--tracker_run_name": "x" * over}}).encode()
        headers = {"Content-Type": "application/json"}
        for data in (config, chunks(config)):
            resp = await client.put("/api/configs/big", data=data, headers=headers)
            assert resp.status == 413 and resp.content_type == "application/json"
            assert (await resp.json())["error"]["status"] == 413
        declared = await client.put("/api/configs/big", data=config, headers=headers)
        assert str(2**20) in (await declared.json())["error"]["message"]  # says what the limit is
        dataloader = (await (await client.get("/api/configs/big")).json())["dataloader"]
        padded = json.dumps(dataloader).encode() + b" " * over  # whitespace: still the same JSON list
        for data in (padded, chunks(padded)):
            resp = await client.post("/api/configs/big/dataloader", data=data, headers=headers)
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["dataloader"] == dataloader

    serve(create_app(ServerSettings(home=tmp_path / "home")), scenario)


def test_the_dataloader_route_has_its_own_limit(settings: Callable[..., ServerSettings]) -> None:
    async def scenario(client: TestClient) -> None:
        await as_admin(client)
        await client.post("/api/configs/environments", json={"name": "small", "model_family": "pixart_sigma"})
        resp = await client.post("/api/configs/small/dataloader", data=b"[" + b" " * 5000 + b"]",
                                 headers={"Content-Type": "application/json"})
        assert resp.status == 413 and "4096" in (await resp.json())["error"]["message"]

    serve(create_app(settings(max_dataloader_bytes=4096)), scenario)


def test_handler_crash_is_json_500_without_details(settings: Callable[..., ServerSettings]) -> None:
    app = create_app(settings())

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/boom", boom)

    async def scenario(client: TestClient) -> None:
        await as_admin(client)
        resp = await client.get("/boom")
        assert resp.status == 500
        body = await resp.json()
        assert body == {"error": {"status": 500, "message": "Internal Server Error"}}
        assert resp.headers["X-Frame-Options"] == "DENY"

    serve(app, scenario)


def test_plugins_lists_registry_names(settings: Callable[..., ServerSettings]) -> None:
    async def scenario(client: TestClient) -> dict[str, Any]:
        await as_admin(client)
        resp = await client.get("/api/plugins")
        assert resp.status == 200
        return await resp.json()

    body = serve(create_app(settings()), scenario)
    registry = get_registry()
    for key in ("families", "optimizers", "schedulers", "event_sinks", "cli_commands", "plugins"):
        assert isinstance(body[key], list), key
        assert all(isinstance(name, str) for name in body[key])
    assert body["families"] == registry.families.names()
    assert "server" in body["cli_commands"]
    assert "server" in body["plugins"]


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_serving_requests_never_imports_torch(tmp_path: Path) -> None:
    """Fresh interpreter, so imports made by other tests in this process cannot hide or fake a leak; the auth
    path (store, scrypt, sessions, API keys) is exercised too."""
    proc = _run_python(
        """
        import asyncio, sys
        from aiohttp.test_utils import TestClient, TestServer
        from simpletuner_server import create_app
        from simpletuner_server.settings import ServerSettings

        async def main():
            app = create_app(ServerSettings())
            async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
                assert (await client.get("/health")).status == 200
                admin = {"email": "a@example.com", "username": "admin", "password": "correct horse"}
                assert (await client.post("/api/cloud/auth/setup/first-admin", json=admin)).status == 201
                resp = await client.post("/api/cloud/auth/api-keys", json={"name": "k"})
                key = (await resp.json())["key"]
                body = await (await client.get("/api/plugins", headers={"X-API-Key": key})).json()
                assert "server" in body["cli_commands"], body

        asyncio.run(main())
        leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not leaked, leaked
        print("clean")
        """,
        SIMPLETUNER_HOME=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clean"


def test_loading_the_plugin_does_not_import_aiohttp() -> None:
    proc = _run_python(
        """
        import sys
        import simpletuner_server.plugin
        assert "aiohttp" not in sys.modules
        assert "torch" not in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr


def _server_command() -> Any:
    return get_registry().cli_commands.get("server")


def test_server_command_registered_with_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    cmd = _server_command()
    assert get_registry().cli_commands.owner("server") == "server"

    monkeypatch.delenv("SIMPLETUNER_HOST", raising=False)
    monkeypatch.delenv("SIMPLETUNER_PORT", raising=False)
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8001)

    monkeypatch.setenv("SIMPLETUNER_HOST", "0.0.0.0")
    monkeypatch.setenv("SIMPLETUNER_PORT", "9123")
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 9123)
    assert parser.parse_args(["--port", "7000"]).port == 7000

    with pytest.raises(SystemExit):
        parser.parse_args(["--port", "70000"])
    assert parser.parse_args([]).max_body_bytes is None  # then the setting (env or 1 MiB) applies
    assert parser.parse_args(["--max-body-bytes", "2048"]).max_body_bytes == 2048
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-body-bytes", "-1"])


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {"SIMPLETUNER_HOST": "::1", "SIMPLETUNER_PORT": "9000", "SIMPLETUNER_HOME": str(tmp_path)}
    s = ServerSettings.from_env(env)
    assert (s.host, s.port, s.home, s.max_body_bytes) == ("::1", 9000, tmp_path, 2**20)
    assert s.max_dataloader_bytes == 16 * 2**20
    limits = ServerSettings.from_env({"SIMPLETUNER_MAX_BODY_BYTES": "4096",
                                      "SIMPLETUNER_MAX_DATALOADER_BYTES": "8192"})
    assert (limits.max_body_bytes, limits.max_dataloader_bytes) == (4096, 8192)
    with pytest.raises(ValueError, match="max_body_bytes"):
        ServerSettings.from_env({"SIMPLETUNER_MAX_BODY_BYTES": "0"})
    assert ServerSettings.from_env({}).port == 8001
    assert ServerSettings.from_env({}).home == Path("~/.simpletuner").expanduser()
    assert ServerSettings.from_env({"SIMPLETUNER_PORT": "oops"}, port=5).port == 5
    with pytest.raises(ValueError, match="oops"):
        ServerSettings.from_env({"SIMPLETUNER_PORT": "oops"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_command_runs_and_stops_cleanly(tmp_path: Path) -> None:
    """The real ``run``: prints the URL line then the setup-token line, the token creates the first admin from
    a non-local client, /health answers, and it exits 0 on SIGTERM."""
    port = _free_port()
    code = f"""
        import argparse, sys
        from simpletuner_core.plugins import get_registry
        cmd = get_registry().cli_commands.get("server")
        parser = argparse.ArgumentParser()
        cmd.add_arguments(parser)
        sys.exit(cmd.run(parser.parse_args(["--host", "127.0.0.1", "--port", "{port}"])))
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SIMPLETUNER_HOME": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, (
            line,
            proc.stderr.read() if proc.poll() is not None else "",
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    assert json.load(resp)["status"] == "ok"
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        token_line = proc.stdout.readline()
        assert "X-Setup-Token" in token_line, token_line
        token = token_line.split()[-1]
        admin = json.dumps({"email": "a@example.com", "username": "admin", "password": "correct horse"})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/cloud/auth/setup/first-admin", data=admin.encode(), method="POST",
            headers={"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.9",
                     "X-Setup-Token": token})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 201
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
