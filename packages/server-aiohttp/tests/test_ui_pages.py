"""The dashboard's server side without a browser: page auth (redirects, roles), escaping, the CSP, static
assets, and the CSRF rules for cookie sessions (browsers need the token; cookie scripts such as the
tutorial's curl calls do not; other origins never)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp.test_utils import TestClient

from simpletuner_core.jobs.models import Job
from simpletuner_server import __version__
from simpletuner_server.keys import STORE_KEY
from simpletuner_server.ui.render import PAGE_CSP
from simpletuner_server.ui.static_files import STATIC_DIR
from simpletuner_server.ui.views import MODULE_IMPORTS, PAGES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import ADMIN, as_user, call, serve_as_admin

TEMPLATES = Path(STATIC_DIR).parent / "templates"


def test_templates_have_no_inline_script_style_or_handlers() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name  # CSP: script-src 'self'
        assert not re.search(r"\sstyle\s*=", text), template.name  # CSP: style-src 'self'
        assert not re.search(r"\son[a-z]+\s*=", text), template.name


def test_module_preloads_match_the_scripts_imports() -> None:
    for script in (STATIC_DIR / "js").glob("*.js"):
        imports = set(re.findall(r'from "\./([\w.]+\.js)"', script.read_text()))
        if script.name in MODULE_IMPORTS:
            assert imports == set(MODULE_IMPORTS[script.name]), script.name
        else:
            assert imports <= {"common.js"}, f"{script.name} imports {imports}: list it in MODULE_IMPORTS"


def test_pages_redirect_before_setup_and_without_a_session(tmp_path: Path) -> None:
    async def scenario(admin: TestClient) -> None:
        base = str(admin.make_url("/"))
        async with aiohttp.ClientSession(base_url=base) as anon:
            for path in ("/jobs", "/jobs/x", "/environments", "/datasets", "/users", "/account"):
                resp = await anon.get(path, allow_redirects=False)
                assert resp.status == 303 and resp.headers["Location"] == "/login?next=" + path, path
            resp = await anon.get("/", allow_redirects=False)
            assert resp.headers["Location"] == "/jobs"
            resp = await anon.get("/login?next=//evil.example/x")
            assert 'data-next="/jobs"' in await resp.text()  # no open redirect after login
            resp = await anon.get("/setup", allow_redirects=False)
            assert resp.headers["Location"] == "/login"  # an admin exists

    serve_as_admin(tmp_path, scenario)


def test_every_page_renders_with_the_csp_and_escapes_its_parameters(tmp_path: Path) -> None:
    async def scenario(admin: TestClient) -> None:
        store = admin.server.app[STORE_KEY]
        store.create_job(Job(id="20260101-000000-abcdef", config={}, user="admin", env="demo"))
        for path, _ in PAGES:
            concrete = path.replace("{job_id}", "20260101-000000-abcdef").replace("{name}", "demo")
            resp = await admin.get(concrete, allow_redirects=False)
            if path in ("/", "/setup"):
                assert resp.status == 303
                continue
            text = await resp.text()
            assert resp.status == 200, (path, text[:200])
            assert resp.headers["Content-Security-Policy"] == PAGE_CSP
            assert resp.headers["Content-Type"].startswith("text/html")
            assert 'name="csrf-token" content="' in text
        resp = await admin.get("/jobs/20260101-000000-000000")  # unknown: an HTML 404, as the API's
        assert resp.status == 404 and "No such job" in await resp.text()
        probe = '"><img src=x onerror=alert(1)>'
        resp = await admin.get("/environments/" + quote(probe))
        text = await resp.text()
        assert resp.status == 200 and probe not in text
        assert 'data-name="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in text

    serve_as_admin(tmp_path, scenario)


def test_roles_decide_what_a_page_shows(tmp_path: Path) -> None:
    async def scenario(admin: TestClient) -> None:
        async with as_user(admin, "rita", ["researcher"]) as rita:
            resp = await rita.get("/users")
            text = await resp.text()
            assert resp.status == 403 and "user.manage" in text and resp.headers["Content-Type"].startswith("text/html")
            resp = await rita.get("/jobs")
            text = await resp.text()
            assert 'href="/users"' not in text and 'href="/jobs"' in text
        resp = await admin.get("/jobs")
        assert 'href="/users"' in await resp.text()

    serve_as_admin(tmp_path, scenario)


def test_static_assets_are_compressed_cached_and_confined(tmp_path: Path) -> None:
    async def scenario(admin: TestClient) -> None:
        resp = await admin.get("/ui/static/vendor/uplot/uPlot.iife.min.js", headers={"Accept-Encoding": "gzip"})
        assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Cache-Control"].startswith("public") and resp.content_length < 30_000
        etag = resp.headers["ETag"]
        resp = await admin.get("/ui/static/vendor/uplot/uPlot.iife.min.js", headers={"If-None-Match": etag})
        assert resp.status == 304
        page = await (await admin.get("/jobs")).text()
        assert f'src="/ui/static/v{__version__}/js/jobs.js"' in page  # versioned: an upgrade is never stale
        for versioned in (f"/ui/static/v{__version__}/js/common.js", "/ui/static/v0.0.1/js/common.js"):
            resp = await admin.get(versioned)  # an older page's URL still loads the current file
            assert resp.status == 200 and "export async function api" in await resp.text()
        for bad in ("/ui/static/%2e%2e/views.py", "/ui/static/..%2fviews.py", "/ui/static/nope.js",
                    "/ui/static/v1/nope.js"):
            status, body, _ = await call(admin, "GET", bad)
            assert status == 404, (bad, body)

    serve_as_admin(tmp_path, scenario)


def test_csrf_rules_for_cookie_sessions(tmp_path: Path) -> None:
    async def scenario(admin: TestClient) -> None:
        host = f"http://{admin.host}:{admin.port}"
        me = await (await admin.get("/api/cloud/auth/me")).json()
        token = me["csrf_token"]
        body = {"name": "k1"}
        # a browser write (it always sends Origin) without the token: refused, nothing made
        status, answer, _ = await call(admin, "POST", "/api/cloud/auth/api-keys", json=body, headers={"Origin": host})
        assert status == 403 and "CSRF" in answer["error"]["message"]
        status, answer, _ = await call(admin, "POST", "/api/cloud/auth/api-keys", json=body,
                                       headers={"Origin": host, "X-CSRF-Token": "0" * 64})
        assert status == 403
        status, answer, _ = await call(admin, "POST", "/api/cloud/auth/api-keys", json=body,
                                       headers={"Sec-Fetch-Site": "same-origin"})
        assert status == 403  # fetch metadata marks a browser too
        keys = await (await admin.get("/api/cloud/auth/api-keys")).json()
        assert keys == []
        # with the session's token: accepted
        status, answer, _ = await call(admin, "POST", "/api/cloud/auth/api-keys", json=body,
                                       headers={"Origin": host, "X-CSRF-Token": token})
        assert status == 201, answer
        # another origin: refused even with the token
        status, _, _ = await call(admin, "POST", "/api/cloud/auth/api-keys", json=body,
                                  headers={"Origin": "http://evil.example", "X-CSRF-Token": token})
        assert status == 403
        # a cookie script (curl -b, as in the tutorial) sends no browser markers: works without a token
        status, _, _ = await call(admin, "POST", "/api/cloud/auth/api-keys", json={"name": "curl"})
        assert status == 201
        # login from another origin is refused (no login CSRF)
        status, _, _ = await call(admin, "POST", "/api/cloud/auth/login", headers={"Origin": "http://evil.example"},
                                  json={"username": ADMIN["username"], "password": ADMIN["password"]})
        assert status == 403
        # the token belongs to the session: another session's token does not work
        async with as_user(admin, "rita", ["researcher"]) as rita:
            status, _, _ = await call(rita, "POST", "/api/cloud/auth/api-keys", json=body,
                                      headers={"Origin": host, "X-CSRF-Token": token})
            assert status == 403

    serve_as_admin(tmp_path, scenario)
