"""Who a request acts as, and the server's mutable auth state. Plain data: no aiohttp, no store calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import attrs

from simpletuner_core.auth import ADMIN, User, has_permission, hash_token, tokens_equal
from simpletuner_core.jobs.store import Store
from simpletuner_server.clients import RateLimiter

log = logging.getLogger("simpletuner_server.auth")


@attrs.frozen
class Principal:
    """The authenticated user plus how they got in; ``permissions`` already narrowed by an API key's scope."""

    user: User
    permissions: frozenset[str]
    via: str  # "session" or "api_key"
    session_hash: str | None = attrs.field(default=None, repr=False)
    api_key_id: int | None = None
    scope: tuple[str, ...] | None = None  # the API key's scoped permissions, when it has any

    def can(self, permission: str) -> bool:
        return has_permission(self.permissions, permission)


def log_setup_token(token: str) -> None:
    """Default outside the CLI: the token must reach the operator somehow, and the log is theirs."""
    log.warning("no admin account exists; setup token for POST /api/cloud/auth/setup/first-admin "
                "(header X-Setup-Token): %s", token)


@attrs.define
class AuthState:
    """Per-app auth state: the setup token's hash (never the token), login limiter, admin-exists cache."""

    on_setup_token: Callable[[str], None] = log_setup_token
    limiter: RateLimiter = attrs.field(factory=RateLimiter)
    #: Concurrent scrypt runs (32 MiB, ~0.1 s of a core each): a login flood queues instead of eating RAM.
    kdf_slots: asyncio.Semaphore = attrs.field(factory=lambda: asyncio.Semaphore(4))
    setup_token_hash: str | None = attrs.field(default=None, repr=False)
    _has_admin: bool = False

    def admin_exists(self, store: Store) -> bool:
        """Cached once true: the last active admin can be neither deleted, demoted nor deactivated."""
        if not self._has_admin:
            self._has_admin = store.count_users(level=ADMIN, active_only=True) > 0
        return self._has_admin

    def admin_created(self) -> None:
        """The setup token is one-time: it dies with the first admin."""
        self._has_admin, self.setup_token_hash = True, None

    def setup_token_ok(self, token: str | None) -> bool:
        expected = self.setup_token_hash
        return bool(token) and expected is not None and tokens_equal(hash_token(token or ""), expected)
