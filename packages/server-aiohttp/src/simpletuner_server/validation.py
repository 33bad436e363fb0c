"""JSON request bodies: parsed once, every problem reported at once as ``{path, message[, did_you_mean]}``.

The same error shape as core's config model, so clients show field errors the same way everywhere.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from aiohttp import web

from simpletuner_core.auth import LEVELS, unknown_levels
from simpletuner_server.settings import parse_bool


@attrs.frozen
class Check:
    """A field test (a message when the value is wrong, else None) and the JSON Schema it enforces."""

    test: Callable[[Any], str | None]
    schema: Mapping[str, Any]

    def __call__(self, value: Any) -> str | None:
        return self.test(value)


def check(schema: Mapping[str, Any]) -> Callable[[Callable[[Any], str | None]], Check]:
    """Decorator: a test function becomes a :class:`Check` documented by ``schema``."""
    return lambda test: Check(test, schema)


@attrs.frozen
class Body:
    """A JSON object body: its fields' checks and which are required. Handlers validate with it and the
    OpenAPI document is generated from it, so the two cannot disagree."""

    checks: Mapping[str, Check]
    required: tuple[str, ...] = ()
    #: Keep explicit nulls (they mean something, e.g. "unlimited"); otherwise null means "not given".
    keep_nulls: bool = False

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {k: dict(c.schema) for k, c in self.checks.items()},
                "required": list(self.required), "additionalProperties": False}

USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,64}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024  # the upper bound keeps a single login from becoming a CPU sink


class InvalidRequest(web.HTTPUnprocessableEntity):
    """A 422 carrying every field error; ``error_middleware`` puts them under ``error.errors``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        # The message repeats the problems so a curl user reads them without parsing ``errors``.
        summary = "; ".join(f"{e['path']}: {e['message']}" if e["path"] else e["message"] for e in errors)
        super().__init__(text=f"Invalid request: {summary}")
        self.errors = errors


@check({"type": "string", "pattern": USERNAME_RE.pattern, "minLength": 3, "maxLength": 64})
def username(value: Any) -> str | None:
    if not isinstance(value, str) or not USERNAME_RE.fullmatch(value):
        return "must be 3-64 characters: letters, digits, '_', '.' or '-'"
    return None


@check({"type": "string", "format": "email", "maxLength": 254})
def email(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 254 or not EMAIL_RE.fullmatch(value):
        return "must be a valid email address"
    return None


@check({"type": "string", "minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD})
def password(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) < MIN_PASSWORD:
        return f"must be at least {MIN_PASSWORD} characters"
    if len(value) > MAX_PASSWORD:
        return f"must be at most {MAX_PASSWORD} characters"
    return None


def text(max_length: int = 256) -> Check:
    @check({"type": "string", "minLength": 1, "maxLength": max_length, "pattern": r"\S"})
    def non_empty(value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return "must be a non-empty string"
        return f"must be at most {max_length} characters" if len(value) > max_length else None

    return non_empty


@check({"type": "boolean"})
def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def integer(low: int, high: int, nullable: bool = False) -> Check:
    schema: dict[str, Any] = {"type": ["integer", "null"] if nullable else "integer", "minimum": low,
                              "maximum": high}

    @check(schema)
    def bounded(value: Any) -> str | None:
        if nullable and value is None:
            return None
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be an integer between {low} and {high}" + (" or null" if nullable else "")

    return bounded


@check({"type": "array", "items": {"type": "string"}})
def string_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return "must be a list of strings"
    return None


@check({"type": "array", "items": {"type": "string", "enum": list(LEVELS)}})
def level_names(value: Any) -> str | None:
    problem = string_list(value)
    if problem:
        return problem
    unknown = unknown_levels(value)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        return f"unknown level {names}; expected one of: {', '.join(LEVELS)}"
    return None


def flag(values: Mapping[str, str], name: str) -> bool:
    """A yes/no form or query field (absent = no), read like the settings' switches; anything else is a 422."""
    try:
        return parse_bool(values.get(name, ""))
    except ValueError:
        raise InvalidRequest([{"path": name, "message": "must be true or false"}]) from None


def query_ints(query: Mapping[str, str], bounds: Mapping[str, tuple[int, int, int | None]]) -> dict[str, Any]:
    """Integer query parameters, ``name: (low, high, default)``; every bad one is reported at once (422)."""
    values: dict[str, Any] = {}
    errors = []
    for name, (low, high, default) in bounds.items():
        raw = query.get(name)
        if raw is None:
            values[name] = default
            continue
        try:
            value: int | None = int(raw)
        except ValueError:  # also digits past Python's int-parsing limit
            value = None
        if value is None or not low <= value <= high:
            errors.append({"path": name, "message": f"must be an integer between {low} and {high}"})
        else:
            values[name] = value
    if errors:
        raise InvalidRequest(errors)
    return values


def query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value: int = query_ints(query, {name: (low, high, default)})[name]
    return value


def required(query: Mapping[str, str], name: str) -> str:
    """A query parameter that must be present and non-empty (422 naming it)."""
    value = query.get(name)
    if not value:
        raise InvalidRequest([{"path": name, "message": "is required"}])
    return value


def _unknown_key_error(key: str, known: Iterable[str]) -> dict[str, Any]:
    error: dict[str, Any] = {"path": key, "message": "unknown field"}
    close = difflib.get_close_matches(key, list(known), n=1)
    if close:
        error["did_you_mean"] = close[0]
    return error


async def read_json(request: web.Request, body_type: Body) -> dict[str, Any]:
    """The body as a dict whose present fields all passed the checks; unknown fields are errors (typos in a
    field name must not silently drop what the client meant to set)."""
    checks, required = body_type.checks, body_type.required
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="Request body must be valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest([{"path": "", "message": "expected a JSON object"}])
    errors: list[dict[str, Any]] = [{"path": k, "message": "is required"} for k in required if k not in body]
    for key, value in body.items():
        check = checks.get(key)
        if check is None:
            errors.append(_unknown_key_error(key, checks))
        elif key not in required and value is None and not body_type.keep_nulls:
            continue  # an explicit null means "not given" for optional fields
        else:
            problem = check(value)
            if problem:
                errors.append({"path": key, "message": problem})
    if errors:
        raise InvalidRequest(errors)
    return {key: value for key, value in body.items() if value is not None or body_type.keep_nulls}
