"""Cross-cutting hardening: CORS off unless configured, security headers, bounded log lines."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from simpletuner_server.middlewares import clip
from simpletuner_server.settings import ServerSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import call, serve_as_admin

PREFLIGHT = {"Origin": "https://ui.example.com", "Access-Control-Request-Method": "POST"}


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        status, body, resp = await call(client, "OPTIONS", "/api/training/status", headers=PREFLIGHT)
        assert status == 403 and "CORS is not enabled" in body["error"]["message"]
        assert "Access-Control-Allow-Origin" not in resp.headers
        status, _, resp = await call(client, "GET", "/api/training/status", headers={"Origin": PREFLIGHT["Origin"]})
        assert status == 200 and "Access-Control-Allow-Origin" not in resp.headers
        for name in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Content-Security-Policy",
                     "Permissions-Policy"):
            assert name in resp.headers, name
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]

    serve_as_admin(tmp_path, scenario)


def test_cors_for_configured_origins_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPLETUNER_CORS_ORIGINS", "https://ui.example.com/, http://localhost:3000")
    settings = ServerSettings.from_env(home=tmp_path)
    assert settings.cors_origins == ("https://ui.example.com", "http://localhost:3000")

    async def scenario(client: TestClient) -> None:
        resp = await client.options("/api/training/status", headers=PREFLIGHT)
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://ui.example.com"
        assert "X-API-Key" in resp.headers["Access-Control-Allow-Headers"]
        resp = await client.get("/api/training/status", headers={"Origin": "https://ui.example.com"})
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "https://ui.example.com"
        assert resp.headers["Vary"] == "Origin"
        resp = await client.options("/api/training/status", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers

    serve_as_admin(tmp_path, scenario, settings)


def test_log_lines_are_bounded_and_unforgeable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert clip("a" * 500) == "a" * 200 + "…(+300)"
    assert "\n" not in clip("x\nFAKE LOG LINE") and "\\n" in clip("x\nFAKE LOG LINE")

    async def scenario(client: TestClient) -> None:
        with caplog.at_level(logging.INFO, logger="simpletuner_server"):
            resp = await client.post("/api/training/start" + "%0A" * 3 + "x" * 3000,
                                     data=b"--b\r\nbad\r\n", headers={"Content-Type": "multipart/form-data"})
            assert resp.status in (400, 401, 404)
        assert all(len(r.getMessage()) < 600 for r in caplog.records)

    serve_as_admin(tmp_path, scenario)
