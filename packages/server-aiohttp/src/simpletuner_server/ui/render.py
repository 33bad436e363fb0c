"""Server-side HTML for the dashboard: one layout, small page templates, every interpolated value escaped.

Templates are plain HTML files with ``{{ name }}`` placeholders. A value is always escaped unless it is a
:class:`Markup` built here from escaped parts, so a caption, an environment description or a user name can
never become markup. No template engine dependency: the pages are shells that their scripts fill from the JSON
API, so the server only interpolates a handful of values.
"""

from __future__ import annotations

import functools
import html
import re
from importlib import resources
from typing import Any

from simpletuner_server import __version__

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
#: The dashboard's own policy: scripts, styles, images and connections from this origin only (no inline
#: script or style), images also as ``data:``/``blob:`` (validation previews arrive as data URLs).
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")
STATIC_PREFIX = "/ui/static/"


class Markup(str):
    """Already-safe HTML (built by this module from escaped parts); inserted as is."""


def escape(value: Any) -> str:
    if isinstance(value, Markup):
        return value
    return html.escape("" if value is None else str(value), quote=True)


@functools.cache
def _template(name: str) -> str:
    return resources.files("simpletuner_server.ui").joinpath("templates", name).read_text(encoding="utf-8")


def fill(template: str, /, **values: Any) -> Markup:
    """``templates/<template>`` with every ``{{ key }}`` replaced by its escaped value; a missing key is a bug."""

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template {template} needs {key!r}")
        return escape(values[key])

    return Markup(_PLACEHOLDER.sub(sub, _template(template)))


def static(path: str) -> str:
    """A static asset's URL under a version segment, so browsers may cache it for long and still see an
    upgrade; a module's relative imports (``./common.js``) resolve under the same segment."""
    return f"{STATIC_PREFIX}v{__version__}/{path}"


def data_attrs(values: dict[str, Any]) -> Markup:
    """``data-*`` attributes that hand a page's script its parameters (escaped: ids come from the URL)."""
    return Markup(" ".join(f'data-{escape(k)}="{escape(v)}"' for k, v in values.items() if v is not None))
