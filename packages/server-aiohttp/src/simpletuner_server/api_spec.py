"""Request descriptions shared by validation and the OpenAPI document.

A handler declares what it accepts with :func:`accepts`; the same :class:`Form` / :class:`Body` objects are what
the handler validates with, so ``/openapi.json`` cannot drift from what the server enforces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

H = TypeVar("H", bound=Callable[..., Any])

#: JSON Schema fragments reused across routes.
STRING: dict[str, Any] = {"type": "string"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


@attrs.frozen
class Form:
    """A multipart/urlencoded form: field name → JSON Schema; ``files`` are the file fields."""

    fields: Mapping[str, dict[str, Any]]
    required: tuple[str, ...] = ()
    #: Whether the body may also be a multipart upload (file fields present).
    multipart: bool = True

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": dict(self.fields), "required": list(self.required)}


@attrs.frozen
class Query:
    """Query parameters: name → JSON Schema, plus which are required."""

    params: Mapping[str, dict[str, Any]]
    required: tuple[str, ...] = ()


def accepts(*, form: Form | None = None, body: Any = None, query: Query | None = None,
            tag: str | None = None) -> Callable[[H], H]:
    """Attach request metadata to a handler for the OpenAPI generator (no runtime wrapping)."""

    def mark(handler: H) -> H:
        spec = dict(getattr(handler, "api_spec", {}))
        spec.update({k: val for k, val in {"form": form, "body": body, "query": query, "tag": tag}.items()
                     if val is not None})
        handler.api_spec = spec  # type: ignore[attr-defined]
        return handler

    return mark
