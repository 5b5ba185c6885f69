"""A short-lived memory of who a credential belongs to, so a request skips the lookup.

Every authenticated request would otherwise pay a store round trip (a token's digest, an Access
user by email) and, with Cloudflare Access, an RS256 verification. An entry lives for at most
PARLEY_AUTH_CACHE_SECONDS and never past the credential's own expiry; a sign-out in this process
forgets its entry at once. What another process changes (`parley tokens revoke`, `parley users
disable`) takes effect here within that many seconds; 0 turns the cache off.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from parley.store.users import User

#: entries kept at most; the oldest go first (one per live credential is the normal load)
MAX_ENTRIES = 10_000


class UserCache:
    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.clock = clock
        self._entries: collections.OrderedDict[str, tuple[User, float]] = collections.OrderedDict()

    def get(self, key: str) -> User | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        user, until = entry
        if self.clock() >= until:
            del self._entries[key]
            return None
        return user

    def put(self, key: str, user: User, *, expires_at: float | None = None) -> None:
        """Remember `user` for `key` until the cache's lifetime ends, or `expires_at` if sooner."""
        if self.seconds <= 0:
            return
        until = self.clock() + self.seconds
        if expires_at is not None:
            until = min(until, expires_at)
        self._entries[key] = (user, until)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
