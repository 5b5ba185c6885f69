"""UserCache: an entry lives for the cache's lifetime, never past the credential's own expiry."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.auth import cache as cache_module
from parley.auth.cache import UserCache
from parley.auth.factory import build_authenticator
from parley.auth.tokens import TokenAuth
from parley.store.users import User
from tests.conftest import make_settings

ALICE = User("u1", "alice", admin=False, disabled=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_ends_with_the_cache_lifetime_or_the_credential_whichever_is_first() -> None:
    clock = Clock()
    cache = UserCache(5, clock=clock)
    cache.put("a", ALICE)
    cache.put("b", ALICE, expires_at=clock.now + 2)
    clock.now += 1.9
    assert cache.get("a") == ALICE and cache.get("b") == ALICE
    clock.now += 0.1
    assert cache.get("b") is None and cache.get("a") == ALICE
    clock.now += 3
    assert cache.get("a") is None and len(cache) == 0


def test_off_remembers_nothing_and_forget_is_at_once() -> None:
    off = UserCache(0)
    off.put("a", ALICE)
    assert off.get("a") is None
    on = UserCache(60)
    on.put("a", ALICE)
    on.forget("a")
    assert on.get("a") is None


def test_the_oldest_entries_go_first_beyond_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "MAX_ENTRIES", 3)
    cache = UserCache(60)
    for key in "abcd":
        cache.put(key, ALICE)
    assert cache.get("a") is None and [cache.get(k) for k in "bcd"] == [ALICE] * 3


def test_the_setting_is_the_authenticators_cache_lifetime(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth="token", auth_cache_seconds=42)
    auth = build_authenticator(settings, users=None)  # type: ignore[arg-type]
    assert isinstance(auth, TokenAuth) and auth.cache.seconds == 42
