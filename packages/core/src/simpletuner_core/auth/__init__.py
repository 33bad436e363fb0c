"""Accounts for the HTTP server: password hashing, tokens, user records and the level → permission table.

Torch-free and stdlib-only (``hashlib``, ``secrets``, ``hmac``) so the server can use it without a training
stack; it lives in core because the store (``simpletuner_core.jobs.store``) persists users, keys and sessions.
"""

from __future__ import annotations

from simpletuner_core.auth.models import ApiKey, DuplicateUserError, Session, User
from simpletuner_core.auth.passwords import dummy_hash, hash_password, needs_rehash, verify_password
from simpletuner_core.auth.permissions import (
    ADMIN,
    KNOWN_PERMISSIONS,
    LEVELS,
    has_permission,
    permissions_for,
    unknown_levels,
)
from simpletuner_core.auth.tokens import (
    API_KEY_PREFIX,
    hash_token,
    key_prefix,
    new_api_key,
    new_session_token,
    tokens_equal,
)

__all__ = [
    "ADMIN",
    "API_KEY_PREFIX",
    "KNOWN_PERMISSIONS",
    "LEVELS",
    "ApiKey",
    "DuplicateUserError",
    "Session",
    "User",
    "dummy_hash",
    "has_permission",
    "hash_password",
    "hash_token",
    "key_prefix",
    "needs_rehash",
    "new_api_key",
    "new_session_token",
    "permissions_for",
    "tokens_equal",
    "unknown_levels",
    "verify_password",
]
