"""Shared by the browser tests (fixtures in conftest.py): a real ``simpletuner server`` process per module and one headless Chromium per module.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright for Python through ``executable_path``
(Playwright's own browser download is never used). Without a Chromium the tests skip, unless
``SIMPLETUNER_REQUIRE_BROWSER=1`` (set by CI) makes that a failure. Every page a test opens is watched for
console errors, failed requests and uncaught exceptions; any of them fails the test. Screenshots go to
``build/ui-screenshots/`` (``SIMPLETUNER_SCREENSHOTS`` to change), kept as build artefacts.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import pytest

pytest.importorskip("simpletuner_server")
from simpletuner_server.demo_command import free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"email": "admin@example.com", "username": "admin", "password": "correct horse battery"}
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    return os.environ.get("SIMPLETUNER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot_dir() -> Path:
    path = Path(os.environ.get("SIMPLETUNER_SCREENSHOTS") or ROOT / "build" / "ui-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@attrs.define
class Live:
    """A running server: its base URL and state directory."""

    base: str
    home: Path
    log: Path
    port: int = 0
    proc: Any = None

    def restart(self) -> None:
        """Stop the server (SIGTERM: its streams close, trainers keep running) and start it again on the same
        port and home, as after an upgrade or a crash."""
        assert stop_server(self.proc) == 0, self.log.read_text()[-3000:]
        self.proc = start_server(self.home, self.port, self.log)

    def api(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        """A plain HTTP call (no browser), JSON in and out; for arranging state a test is not about."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json",
                                                  **({"X-API-Key": key} if key else {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as err:
            text = err.read()
            return err.code, json.loads(text) if text else None


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A fresh ``simpletuner server`` (own home, own port) for the module; no admin yet."""
    home = tmp_path_factory.mktemp("ui-home")
    log = home / "server.log"
    port = free_port()
    live = Live(f"http://127.0.0.1:{port}", home, log, port, start_server(home, port, log))
    try:
        yield live
    finally:
        stop_server(live.proc)


@pytest.fixture(scope="module")
def admin_key(live_server: Live) -> str:
    """Create the first admin over HTTP (from loopback) and an API key for arranging state."""
    status, body = live_server.api("POST", "/api/cloud/auth/setup/first-admin", ADMIN)
    assert status == 201, body
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    login = urllib.request.Request(live_server.base + "/api/cloud/auth/login", method="POST",
                                   data=json.dumps({"username": ADMIN["username"], "password": ADMIN["password"]}).encode(),
                                   headers={"Content-Type": "application/json"})
    opener.open(login, timeout=30)
    make = urllib.request.Request(live_server.base + "/api/cloud/auth/api-keys", method="POST",
                                  data=b'{"name": "ui-tests"}', headers={"Content-Type": "application/json"})
    with opener.open(make, timeout=30) as resp:
        return json.loads(resp.read())["key"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module's tests."""
    executable = chromium_path()
    if executable is None:
        if os.environ.get("SIMPLETUNER_REQUIRE_BROWSER") == "1":
            pytest.fail("SIMPLETUNER_REQUIRE_BROWSER=1 but no chromium was found (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


@attrs.define
class Watch:
    """What went wrong in the browser while a test ran: console errors, page errors, failed requests."""

    problems: list[str] = attrs.Factory(list)
    allowed: list[str] = attrs.Factory(list)  # substrings of problems a test expects (e.g. a 403 it provokes)

    def expect(self, fragment: str) -> None:
        self.allowed.append(fragment)

    def check(self) -> None:
        left = [p for p in self.problems if not any(a in p for a in self.allowed)]
        assert not left, "browser problems:\n" + "\n".join(left)


def watch_page(page: Any) -> Watch:
    watch = Watch()
    page.on("console", lambda msg: watch.problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" else None)
    page.on("pageerror", lambda exc: watch.problems.append(f"page error: {exc}"))
    # a request cut short by navigating away (ERR_ABORTED), or a stream closed that way, is not a failure
    page.on("requestfailed", lambda req: watch.problems.append(f"request failed: {req.url} {req.failure}")
            if "/events/stream" not in req.url and "ERR_ABORTED" not in (req.failure or "") else None)
    return watch


@pytest.fixture
def new_page(browser: Any, live_server: Live) -> Iterator[Any]:
    """``new_page(viewport=…)`` → (page, watch) in a fresh context (own cookies); checked for browser
    problems when the test ends."""
    made: list[tuple[Any, Watch]] = []

    def make(**context_args: Any) -> tuple[Any, Watch]:
        context = browser.new_context(base_url=live_server.base, **context_args)
        context.set_default_timeout(15_000)
        page = context.new_page()
        watch = watch_page(page)
        made.append((context, watch))
        return page, watch

    yield make
    for context, watch in made:
        context.close()
        watch.check()


def login(page: Any, username: str, password: str) -> None:
    """Sign in through the login page and wait for the jobs page."""
    page.goto("/login")
    page.locator("#login-username").fill(username)
    page.locator("#login-password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/jobs")


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot under the artefacts folder."""
    path = screenshot_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def expect(target: Any) -> Any:
    """Playwright's ``expect`` (imported here: the browser fixture skips the tests where playwright is missing)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def sign_in(page: Any, username: str, password: str, to: str) -> None:
    """Sign in on the login page straight to ``to`` (its ``next``), so no other page's requests are cut off
    by navigating on (an aborted fetch counts as a failed request)."""
    page.goto("/login?next=" + quote(to, safe="/"))
    page.locator("#login-username").fill(username)
    page.locator("#login-password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**" + to)
