"""Random bearer secrets (session tokens, API keys) and their stored form.

Only the SHA-256 of a secret is stored: the secrets carry 256 random bits, so a fast hash is enough (no KDF
needed) and a leaked database cannot be replayed as credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "st_"
KEY_PREFIX_CHARS = 8  # random characters kept in clear after "st_" to find a key's row and show it in lists


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    """``st_`` + 43 URL-safe characters (256 bits)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def key_prefix(key: str) -> str:
    """The non-secret lookup part of a key (``st_`` + 8 characters), also what listings show."""
    return key[: len(API_KEY_PREFIX) + KEY_PREFIX_CHARS]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time string comparison (``hmac.compare_digest``) for hashes of secrets."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
