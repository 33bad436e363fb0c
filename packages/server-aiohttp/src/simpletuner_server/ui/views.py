"""Dashboard pages: HTML shells whose scripts fill them from the public JSON API and the event stream.

A page handler only decides who may see the page and which parameters its script gets; the data itself comes
from the same routes any client uses. Pages are authenticated like every route: without a session the browser
is sent to ``/login`` (or ``/setup`` before the first admin exists) instead of getting a JSON 401.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from simpletuner_core.jobs.models import FAILED
from simpletuner_server import __version__
from simpletuner_server.api.training import views as training_views
from simpletuner_server.auth import SESSION_COOKIE, authenticate, csrf_token
from simpletuner_server.keys import AUTH_KEY, PRINCIPAL_KEY, STORE_KEY
from simpletuner_server.principal import Principal
from simpletuner_server.ui.render import PAGE_CSP, Markup, data_attrs, escape, fill, static

PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: (path, label, permission needed to see the link; None: everyone signed in).
NAV: tuple[tuple[str, str, str | None], ...] = (
    ("/jobs", "Jobs", "job.view.own"),
    ("/environments", "Environments", "config.view"),
    ("/datasets", "Datasets", "dataset.view"),
    ("/users", "Users", "user.manage"),
    ("/account", "Account", None),
)
#: The job page's first reads: chart points and the log tail's length (handed to job.js as page parameters, so
#: its reads are the same URLs as the page's preloads).
CHART_POINTS, TAIL = 1500, 50
#: What each page module imports (kept next to the pages: a test checks it against the scripts' imports).
MODULE_IMPORTS: dict[str, tuple[str, ...]] = {
    "environment.js": ("common.js", "config_form.js"),
    "job.js": ("common.js", "loss_chart.js"),
}
_JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _nav(principal: Principal | None, active: str) -> Markup:
    if principal is None:
        return Markup("")
    links = []
    for path, label, permission in NAV:
        if permission is None or principal.can(permission):
            current = ' aria-current="page"' if path == active else ""
            links.append(f'<a href="{path}"{current}>{escape(label)}</a>')
    user = principal.user
    role = "admin" if principal.can("*") else ", ".join(user.levels) or "no level"
    return Markup(fill("nav.html", links=Markup("".join(links)), username=user.username, role=role))


def page(request: web.Request, title: str, script: str | None, body: Markup, *, active: str = "",
         params: dict[str, Any] | None = None, status: int = 200, vendor: tuple[str, ...] = (),
         styles: tuple[str, ...] = (), preload: tuple[str, ...] = ()) -> web.Response:
    """The layout around ``body``; ``script`` is this page's module under ``static/js``, ``vendor`` classic
    scripts it needs first (deferred, so they run in order before the module), ``styles`` extra stylesheets,
    ``preload`` the API reads its script makes first (started while the page parses; the script's own
    ``fetch`` of the same URL reuses them)."""
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    token = request.cookies.get(SESSION_COOKIE) if principal is not None and principal.via == "session" else None
    tags = [f'<link rel="preload" as="fetch" crossorigin="anonymous" href="{escape(url)}">' for url in preload]
    tags += [f'<script defer src="{escape(static(path))}"></script>' for path in vendor]
    if script:
        tags.append(f'<script type="module" src="{escape(static("js/" + script))}"></script>')
        # the modules it imports, fetched in parallel with it instead of after it has been parsed
        tags += [f'<link rel="modulepreload" href="{escape(static("js/" + dep))}">'
                 for dep in MODULE_IMPORTS.get(script, ("common.js",))]
    links = [f'<link rel="stylesheet" href="{escape(static(path))}">' for path in styles]
    html = fill("layout.html", title=title, csrf=csrf_token(token) if token else "",
                css=static("css/app.css"), styles=Markup("".join(links)),
                scripts=Markup("\n".join(tags)), nav=_nav(principal, active), body=body, version=__version__,
                params=data_attrs(params or {}), page=(script or "static").removesuffix(".js"))
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    body = fill("error.html", status=status, message=message)
    return page(request, f"{status}", None, body, status=status)


def _safe_next(value: str | None) -> str:
    """Only a local path may follow a login (no open redirect to another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or urlsplit(value).netloc:
        return "/jobs"
    return value


def gated(permission: str | None) -> Callable[[PageHandler], PageHandler]:
    """Mark a page: the auth middleware lets it through to here, where a missing session becomes a redirect to
    the login page (not a JSON 401) and a missing permission an HTML 403."""

    def decorate(handler: PageHandler) -> PageHandler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            store, state = request.app[STORE_KEY], request.app[AUTH_KEY]
            if not state.admin_exists(store):
                raise web.HTTPSeeOther("/setup")
            try:
                principal = authenticate(request)
            except web.HTTPUnauthorized:
                principal = None
            if principal is None:
                raise web.HTTPSeeOther("/login?next=" + quote(request.path_qs, safe="/"))
            request[PRINCIPAL_KEY] = principal
            if permission is not None and not principal.can(permission):
                return error_page(request, 403, f"You need the {permission} permission to see this page.")
            return await handler(request)

        guarded.ui_page = True  # type: ignore[attr-defined]  # read by auth_middleware
        guarded.__doc__ = handler.__doc__
        return guarded

    return decorate


def public_page(handler: PageHandler) -> PageHandler:
    handler.ui_page = True  # type: ignore[attr-defined]
    return handler


# --- pages --------------------------------------------------------------------------------------------------


@public_page
async def index(request: web.Request) -> web.StreamResponse:
    """``/``: the jobs page for a session, else login (or first-run setup)."""
    store, state = request.app[STORE_KEY], request.app[AUTH_KEY]
    if not state.admin_exists(store):
        raise web.HTTPSeeOther("/setup")
    raise web.HTTPSeeOther("/jobs")


@public_page
async def setup_page(request: web.Request) -> web.StreamResponse:
    """First run: create the first admin (the API accepts it from this machine or with the setup token)."""
    if request.app[AUTH_KEY].admin_exists(request.app[STORE_KEY]):
        raise web.HTTPSeeOther("/login")
    return page(request, "Set up", "setup.js", fill("setup.html"))


@public_page
async def login_page(request: web.Request) -> web.StreamResponse:
    """Sign in; ``next`` (a local path) is where the browser goes afterwards."""
    if not request.app[AUTH_KEY].admin_exists(request.app[STORE_KEY]):
        raise web.HTTPSeeOther("/setup")
    return page(request, "Sign in", "login.js", fill("login.html"),
                params={"next": _safe_next(request.query.get("next"))})


@gated("job.view.own")
async def jobs_page(request: web.Request) -> web.StreamResponse:
    """Every job you may see, the queue, the GPU allocation; limits and workers for admins."""
    principal: Principal = request[PRINCIPAL_KEY]
    return page(request, "Jobs", "jobs.js", fill("jobs.html"), active="/jobs",
                params={"admin": int(principal.can("queue.manage"))})


@gated("job.view.own")
async def job_page(request: web.Request) -> web.StreamResponse:
    """One job, live: progress, loss/LR chart, events, validation grid, checkpoints, commands."""
    job_id = request.match_info["job_id"]
    principal: Principal = request[PRINCIPAL_KEY]
    store = request.app[STORE_KEY]
    try:
        if not _JOB_ID.match(job_id):  # ids go into the page's URLs below unencoded
            raise web.HTTPNotFound()
        job = training_views._job(request, job_id)  # the API's visibility rule: others' jobs do not exist
    except web.HTTPNotFound:
        return error_page(request, 404, "No such job (or it is not yours).")
    meta = " · ".join(part for part in (f"environment {job.env}" if job.env else "", f"by {job.user}" if job.user
                                        else "", f"worker {job.worker_id}" if job.worker_id else "") if part)
    body = fill("job.html", job_id=job_id, state=job.state, meta=meta or "submitted through the API",
                reason=job.reason if job.state == FAILED else "")
    # the event id the page starts from: its log tail and live stream begin there, whatever the log's length
    last = store.last_event_id(job_id)
    return page(request, f"Job {job_id}", "job.js", body, active="/jobs",
                params={"job": job_id, "command": int(principal.can("job.cancel.own")), "state": job.state,
                        "last-event": last, "chart-points": CHART_POINTS, "tail": TAIL},
                vendor=("vendor/uplot/uPlot.iife.min.js",), styles=("vendor/uplot/uPlot.min.css",),
                preload=(f"/api/jobs/{job_id}", f"/api/training/metrics?job_id={job_id}&max_points={CHART_POINTS}",
                         f"/api/training/events?job_id={job_id}&since_index={max(0, last - TAIL)}&limit={TAIL}",
                         f"/api/training/validation/images?job_id={job_id}", f"/api/training/checkpoints?job_id={job_id}"))


@gated("config.view")
async def environments_page(request: web.Request) -> web.StreamResponse:
    """Training environments: list, create from a shipped example."""
    principal: Principal = request[PRINCIPAL_KEY]
    return page(request, "Environments", "environments.js", fill("environments.html"), active="/environments",
                params={"create": int(principal.can("config.create"))})


@gated("config.view")
async def environment_page(request: web.Request) -> web.StreamResponse:
    """One environment: config form and raw JSON, dataloader, validate, activate, start."""
    name = request.match_info["name"]
    principal: Principal = request[PRINCIPAL_KEY]
    return page(request, f"Environment {name}", "environment.js", fill("environment.html"),
                active="/environments", params={"name": name, "submit": int(principal.can("job.submit"))})


@gated("dataset.view")
async def datasets_page(request: web.Request) -> web.StreamResponse:
    """Dataset folders, uploads with progress, a thumbnail grid with editable captions."""
    principal: Principal = request[PRINCIPAL_KEY]
    return page(request, "Datasets", "datasets.js", fill("datasets.html"), active="/datasets",
                params={"folder": request.query.get("folder", ""), "upload": int(principal.can("dataset.upload"))})


@gated("user.manage")
async def users_page(request: web.Request) -> web.StreamResponse:
    """Users (admins): create with levels, disable, reset a password, the registration switch."""
    return page(request, "Users", "users.js", fill("users.html"), active="/users")


@gated(None)
async def account_page(request: web.Request) -> web.StreamResponse:
    """Your account: API keys; sign out."""
    return page(request, "Account", "account.js", fill("account.html"), active="/account")


PAGES: tuple[tuple[str, PageHandler], ...] = (
    ("/", index),
    ("/setup", setup_page),
    ("/login", login_page),
    ("/jobs", jobs_page),
    ("/jobs/{job_id}", job_page),
    ("/environments", environments_page),
    ("/environments/{name}", environment_page),
    ("/datasets", datasets_page),
    ("/users", users_page),
    ("/account", account_page),
)
