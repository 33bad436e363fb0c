"""The one table from user levels to permissions; routes check permissions, never level names.

``*`` grants everything. Permissions only an admin holds (``user.manage``, ``api.keys.all``, ``queue.manage``, ``job.hooks``, ``admin.workers``) are listed in
:data:`KNOWN_PERMISSIONS` so API keys can be scoped to them and typos in ``require(...)`` are caught in tests.
"""

from __future__ import annotations

from collections.abc import Iterable

ADMIN = "admin"
WILDCARD = "*"

LEVELS: dict[str, frozenset[str]] = {
    ADMIN: frozenset({WILDCARD}),
    "researcher": frozenset({
        "api.access", "api.keys.own",
        "config.create", "config.edit.own", "config.delete.own", "config.view",
        "job.submit", "job.view.own", "job.cancel.own", "job.delete.own",
        "dataset.upload", "dataset.view",
    }),
    "viewer": frozenset({"api.access", "config.view", "job.view.own", "dataset.view"}),
}

ADMIN_ONLY_PERMISSIONS = frozenset({"user.manage", "api.keys.all", "queue.manage", "job.hooks", "admin.workers"})
KNOWN_PERMISSIONS: frozenset[str] = frozenset().union(*LEVELS.values(), ADMIN_ONLY_PERMISSIONS) - {WILDCARD}


def unknown_levels(levels: Iterable[str]) -> list[str]:
    """Names not in :data:`LEVELS`, in the order given (for a 422 that names them)."""
    return [name for name in levels if name not in LEVELS]


def permissions_for(levels: Iterable[str], scope: Iterable[str] | None = None) -> frozenset[str]:
    """Union of the levels' permissions, narrowed to ``scope`` (an API key's scoped permissions) if given.

    A scope never widens: a scoped key of a non-admin keeps only the scope entries the user holds.
    """
    granted: frozenset[str] = frozenset().union(*(LEVELS.get(name, frozenset()) for name in levels))
    if scope is None:
        return granted
    wanted = frozenset(scope)
    return wanted if WILDCARD in granted else wanted & granted


def has_permission(granted: Iterable[str], permission: str) -> bool:
    granted = granted if isinstance(granted, (set, frozenset)) else set(granted)
    return WILDCARD in granted or permission in granted
