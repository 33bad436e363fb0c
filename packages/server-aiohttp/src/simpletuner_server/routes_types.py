"""The route-table row type, shared by ``routes`` and the per-area view modules that export their own tables."""

from __future__ import annotations

from aiohttp.typedefs import Handler

Route = tuple[str, str, Handler]
