"""Password hashing with scrypt (stdlib ``hashlib.scrypt``), stored as a self-describing string.

Format: ``scrypt$n=32768,r=8,p=1$<salt>$<digest>`` (URL-safe base64, no padding). The parameters travel with
the hash so they can be raised later without invalidating stored passwords (:func:`needs_rehash` tells when
to re-hash at the next successful login). n=2**15, r=8 costs about 110 ms and 32 MiB per check on one core
(n=2**14 measured 42 ms: under the 50 ms floor we aim for) — slow for an offline guesser, fine for a login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata

SCHEME = "scrypt"
N, R, P = 2**15, 8, 1
SALT_BYTES = 16
DIGEST_BYTES = 32
_MAXMEM = 64 * 1024 * 1024  # OpenSSL's default cap (32 MiB) is below what 128*r*n needs at n=2**15
_MAX_N = 2**20  # refuse absurd parameters read from a tampered row instead of allocating gigabytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kdf(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # NFKC: the same password typed on different keyboards/OSes (composed vs decomposed accents) must match.
    # surrogatepass: a lone surrogate from JSON must fail to match, not crash the request.
    secret = unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=DIGEST_BYTES)


def _encode(salt: bytes, digest: bytes, n: int, r: int, p: int) -> str:
    return f"{SCHEME}$n={n},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def _decode(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    try:
        scheme, params, salt, digest = encoded.split("$")
        values = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        if scheme != SCHEME or n & (n - 1) or not (1 < n <= _MAX_N and 0 < r <= 64 and 0 < p <= 16):
            return None
        return n, r, p, _unb64(salt), _unb64(digest)
    except (ValueError, KeyError):
        return None


def hash_password(password: str) -> str:
    """A fresh random salt per call, so equal passwords never share a stored hash."""
    salt = secrets.token_bytes(SALT_BYTES)
    return _encode(salt, _kdf(password, salt, N, R, P), N, R, P)


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time comparison of the derived key; a malformed stored value never matches."""
    parsed = _decode(encoded)
    if parsed is None:
        return False
    n, r, p, salt, digest = parsed
    return hmac.compare_digest(_kdf(password, salt, n, r, p), digest)


def needs_rehash(encoded: str) -> bool:
    """True when the stored hash used other parameters than the current ones (re-hash after a good login)."""
    parsed = _decode(encoded)
    return parsed is None or parsed[:3] != (N, R, P) or len(parsed[4]) != DIGEST_BYTES


def dummy_hash() -> str:
    """A well-formed hash no password matches: verifying against it costs the same as a real check, so a login
    for an unknown user takes as long as one with a wrong password (no username probing by timing)."""
    return _encode(secrets.token_bytes(SALT_BYTES), secrets.token_bytes(DIGEST_BYTES), N, R, P)
