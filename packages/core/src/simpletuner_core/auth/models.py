"""Account records as the store returns them. Secrets appear only as hashes, and never in ``repr``."""

from __future__ import annotations

import attrs


class DuplicateUserError(ValueError):
    """A username or email already taken (case-insensitively); ``field`` says which, for a 409 naming it."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(f"a user with this {field} already exists: {value!r}")
        self.field = field
        self.value = value


@attrs.frozen
class User:
    id: int
    username: str
    email: str
    password_hash: str = attrs.field(repr=False)
    levels: tuple[str, ...] = ()
    is_active: bool = True
    created_at: float = 0.0
    updated_at: float = 0.0
    last_login_at: float | None = None


@attrs.frozen
class ApiKey:
    id: int
    user_id: int
    name: str
    key_prefix: str  # "st_" + 8 characters, in clear: finds the row and identifies the key in listings
    key_hash: str = attrs.field(repr=False)
    created_at: float = 0.0
    last_used_at: float | None = None
    expires_at: float | None = None
    is_active: bool = True
    scoped_permissions: tuple[str, ...] | None = None  # None: the user's own permissions


@attrs.frozen
class Session:
    token_hash: str = attrs.field(repr=False)
    user_id: int = 0
    created_at: float = 0.0
    expires_at: float = 0.0
