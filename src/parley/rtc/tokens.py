"""Signed tokens that lock an SFU session (or a call) to the browser that created it.

In Cloudflare mode browsers reach the SFU only through Parley, and Parley adds the app secret.
Without a lock, anyone who learned a session id (they travel in events and SDP-free replies)
could pull, close or renegotiate someone else's tracks. So Parley hands the creator a token, an
HMAC of (purpose, id, expiry) under the server's key, and asks for it on every later request
about that id. Tokens are stateless: any instance holding the same PARLEY_SECRET_KEY accepts
them, and nothing is stored per session.

    token = "<expiry unix seconds>.<base64url HMAC-SHA256(key, purpose \\0 id \\0 expiry)>"
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from parley.errors import Forbidden

#: long enough for any call; a token only ever unlocks the one session or call it names
DEFAULT_TTL_SECONDS = 24 * 3600
MAX_TOKEN_CHARS = 128


class TokenSigner:
    def __init__(
        self,
        key: bytes | None = None,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`key`: the server's secret (PARLEY_SECRET_KEY); None makes a random one for this process."""
        self._key = key or secrets.token_bytes(32)
        self._ttl = ttl_seconds
        self._clock = clock

    def __repr__(self) -> str:
        return "TokenSigner(key=<hidden>)"

    def issue(self, purpose: str, ident: str) -> str:
        expiry = int(self._clock()) + self._ttl
        return f"{expiry}.{self._mac(purpose, ident, expiry)}"

    def valid(self, purpose: str, ident: str, token: str | None) -> bool:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return False
        expiry_text, _, mac = token.partition(".")
        if not expiry_text.isdigit():
            return False
        expiry = int(expiry_text)
        if expiry < self._clock():
            return False
        return hmac.compare_digest(mac, self._mac(purpose, ident, expiry))

    def require(self, purpose: str, ident: str, token: str | None, *, field: str) -> None:
        """Raise Forbidden (403, naming `field`) unless `token` was issued for (purpose, ident)."""
        if not self.valid(purpose, ident, token):
            raise Forbidden(
                f"{field} does not unlock this {purpose}: only the browser that created it may use it",
                field=field,
            )

    def _mac(self, purpose: str, ident: str, expiry: int) -> str:
        message = f"{purpose}\0{ident}\0{expiry}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
