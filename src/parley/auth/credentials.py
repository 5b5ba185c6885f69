"""Credentials Parley mints: random, shown once, kept only as a SHA-256 digest.

A token is `pk_` + 43 URL-safe characters (32 random bytes). A fast hash is the right one here:
the secret has 256 bits of entropy, so there is nothing to brute-force, and every request pays for
the lookup. The first 12 characters are kept in the clear as its prefix, to list and revoke it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "pk_"
#: characters of a token shown in listings and used to revoke it
SHOWN = 12
#: longest credential worth hashing: anything longer is refused before any work
MAX_LENGTH = 256


def mint() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def shown_prefix(token: str) -> str:
    return token[:SHOWN]


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets (the metrics token)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))
