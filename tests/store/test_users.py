"""The UserStore contract: every test runs against SQLite and PostgreSQL (tests/store/conftest.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parley.errors import InvalidInput, NotFound
from parley.store.sqlite import SQLiteStore
from parley.store.users import CredentialKind
from tests.store.conftest import AnyStore


async def test_users_are_unique_by_name_and_listed(store: AnyStore) -> None:
    alice = await store.add_user("alice", admin=True)
    bob = await store.add_user("bob@example.com")
    assert alice.id != bob.id and alice.admin and not bob.admin
    with pytest.raises(InvalidInput) as err:
        await store.add_user("alice")
    assert err.value.field == "name"
    assert [u.name for u in await store.list_users()] == ["alice", "bob@example.com"]
    assert await store.user_named("carol") is None


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 255, "é"])
async def test_bad_names_are_refused_and_nothing_is_stored(store: AnyStore, name: str) -> None:
    with pytest.raises(InvalidInput):
        await store.add_user(name)
    assert await store.list_users() == []


async def test_a_credential_finds_its_user_until_revoked_expired_or_disabled(store: AnyStore) -> None:
    alice = await store.add_user("alice")
    await store.add_credential(alice.id, "d1", "pk_abcdefghi", CredentialKind.API, expires_at=None)
    await store.add_credential(alice.id, "d2", "pk_zzzzzzzzz", CredentialKind.COOKIE, expires_at=100.0)
    assert await store.credential_user("d1", CredentialKind.API, now=0) == alice
    # a credential works only as its kind: a cookie's value is no API token
    assert await store.credential_user("d2", CredentialKind.API, now=0) is None
    assert await store.credential_user("d2", CredentialKind.COOKIE, now=99.0) == alice
    assert await store.credential_user("d2", CredentialKind.COOKIE, now=100.0) is None
    await store.set_disabled("alice", True)
    assert await store.credential_user("d1", CredentialKind.API, now=0) is None
    await store.set_disabled("alice", False)
    assert await store.revoke_credentials("pk_abc") == 1
    assert await store.revoke_credentials("pk_abc") == 0  # already revoked
    assert await store.credential_user("d1", CredentialKind.API, now=0) is None
    assert [(t.prefix, t.revoked) for t in await store.list_credentials(alice.id)] == [
        ("pk_abcdefghi", True),
        ("pk_zzzzzzzzz", False),
    ]
    await store.drop_credential("d2")
    assert await store.credential_user("d2", CredentialKind.COOKIE, now=0) is None
    with pytest.raises(NotFound):
        await store.set_disabled("nobody", True)


async def test_revoking_by_prefix_takes_like_wildcards_literally(store: AnyStore) -> None:
    alice = await store.add_user("alice")
    await store.add_credential(alice.id, "d1", "pk_a_c", CredentialKind.API, expires_at=None)
    await store.add_credential(alice.id, "d2", "pk_abc", CredentialKind.API, expires_at=None)
    assert await store.revoke_credentials("pk_a_") == 1
    assert await store.credential_user("d2", CredentialKind.API, now=0) == alice
    assert await store.revoke_credentials("%") == 0


async def test_identified_users_are_made_once(store: AnyStore) -> None:
    first = await store.identified_user("carol@example.com")
    assert await store.identified_user("carol@example.com") == first
    assert [u.name for u in await store.list_users()] == ["carol@example.com"]


async def test_usage_adds_up_per_user_and_day(store: AnyStore) -> None:
    await store.add_usage("u1", "2026-12-03", tokens=10)
    await store.add_usage("u1", "2026-12-03", tokens=5, call_seconds=1.5)
    await store.add_usage("u1", "2026-12-04", tokens=7)
    await store.add_usage("u2", "2026-12-03", tokens=1)
    assert (await store.usage("u1", "2026-12-03")).tokens == 15
    assert (await store.usage("u1", "2026-12-03")).call_seconds == 1.5
    assert (await store.usage("u1", "2026-12-04")).tokens == 7
    assert (await store.usage("u3", "2026-12-03")).tokens == 0


async def test_session_counts_are_per_owner(store: AnyStore) -> None:
    for key in ("u1/a", "u1/b", "u1/b", "u10/a", "u2/a"):
        await store.add_message(key, "t", "user", "hi")
    assert await store.session_count("u1") == 2
    assert await store.session_count("u10") == 1
    assert await store.session_exists("u1/b") and not await store.session_exists("u1/c")


async def test_sessions_stored_before_users_belong_to_the_local_user(tmp_path: Path) -> None:
    """Migration 3 moves every session id of an older database under the local user."""
    path = tmp_path / "old.db"
    from parley.store.sqlite import MIGRATIONS

    with sqlite3.connect(path) as db:
        for number, script in enumerate(MIGRATIONS[:2], start=1):
            db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        db.execute(
            "INSERT INTO messages (session_id, turn_id, role, content, status, created_at) "
            "VALUES ('s1', 't', 'user', 'kept', 'complete', 0)"
        )
    store = SQLiteStore(path)
    await store.open()
    try:
        assert [m.content for m in await store.list_messages("local/s1")] == ["kept"]
        assert await store.list_messages("s1") == []
    finally:
        await store.aclose()
