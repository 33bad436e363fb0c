"""The web dashboard: server-rendered page shells plus vendored static assets, on the public JSON API.

``setup_ui(app)`` adds the pages (``ui/views.py``) and ``/ui/static/`` (``ui/static_files.py`` serving
``ui/static``: our CSS and scripts, ``vendor/`` with third-party assets and their licences). Nothing here
imports torch or builds anything at install time.
"""

from __future__ import annotations

from aiohttp import web

from simpletuner_server.ui import static_files
from simpletuner_server.ui.views import PAGES


def setup_ui(app: web.Application) -> None:
    for path, handler in PAGES:
        app.router.add_get(path, handler)
    app.router.add_get("/ui/static/{path:.+}", static_files.serve)
