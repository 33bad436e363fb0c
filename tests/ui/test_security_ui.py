"""Attacks a browser can carry, tried in a real browser: a page on another origin (same site: another port on
127.0.0.1, so the session cookie is sent) posting a form and a fetch to the API, and a same-origin script
writing without the CSRF token. Each must fail without effect."""

from __future__ import annotations

import http.server
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from ui_helpers import ADMIN, Live, login

EVIL_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" enctype="text/plain" action="{base}/api/cloud/auth/api-keys">
<input name='{{"name": "evil-form", "x": "' value='"}}'></form>
<script>
fetch("{base}/api/cloud/auth/api-keys", {{method: "POST", credentials: "include", mode: "no-cors",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{name: "evil-fetch"}})}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>"""


@pytest.fixture(scope="module")
def evil_origin(live_server: Live) -> Iterator[str]:
    """A page served from another port of 127.0.0.1: another origin, the same site."""
    page = EVIL_PAGE.format(base=live_server.base).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def key_names(live: Live, key: str) -> list[str]:
    status, keys = live.api("GET", "/api/cloud/auth/api-keys", key=key)
    assert status == 200
    return [k["name"] for k in keys]


def test_cross_origin_form_and_fetch_are_refused(new_page: Any, live_server: Live, admin_key: str,
                                                 evil_origin: str) -> None:
    page, watch = new_page()
    login(page, ADMIN["username"], ADMIN["password"])
    watch.expect("")  # the evil page's own requests fail or are refused: that is the point
    refused = []
    page.on("response", lambda r: refused.append(r.status) if "/api-keys" in r.url else None)
    page.goto(evil_origin)
    page.wait_for_url(f"{live_server.base}/api/cloud/auth/api-keys")  # the form navigated to our answer
    assert "Cross-origin request refused" in (page.text_content("body") or "")
    assert refused and all(status == 403 for status in refused), refused
    assert not {"evil-form", "evil-fetch"} & set(key_names(live_server, admin_key))


def test_same_origin_write_without_the_token_is_refused(new_page: Any, live_server: Live, admin_key: str) -> None:
    page, watch = new_page()
    login(page, ADMIN["username"], ADMIN["password"])
    watch.expect("403")
    script = """async (withToken) => {
      const headers = {"Content-Type": "application/json"};
      if (withToken) headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content;
      const resp = await fetch("/api/cloud/auth/api-keys", {method: "POST", headers,
                                body: JSON.stringify({name: withToken ? "with-token" : "no-token"})});
      return resp.status;
    }"""
    assert page.evaluate(script, False) == 403
    assert page.evaluate(script, True) == 201
    names = key_names(live_server, admin_key)
    assert "with-token" in names and "no-token" not in names
