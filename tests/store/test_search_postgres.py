"""PostgreSQL's search index from migration 8: each finished message's tsvector holds its owner's
lexeme, so the GIN index finds a user's matches itself; a database of any age is moved to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from parley.store.base import MessageStatus
from parley.store.conversations import parse_query
from parley.store.postgres import MIGRATIONS, PostgresStore


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(pg_url)
    await s.open()
    yield s
    await s.aclose()


async def found(store: PostgresStore, q: str, owner: str, key: str | None = None) -> list[str]:
    return [h.snippet for h in await store.search(owner, parse_query(q), limit=20, key=key)]


async def test_a_version_7_database_gets_the_owners_lexeme(pg_url: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(pg_url)
    try:  # as the release before migration 8 left it
        await conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at FLOAT8 NOT NULL)"
        )
        for number, script in enumerate(MIGRATIONS[:7], start=1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_version VALUES ($1, 0)", number)
        await conn.execute(
            "INSERT INTO messages (session_id, turn_id, role, content, status, created_at) VALUES "
            "('local/s1', 't', 'user', 'an old ibis', 'complete', 0), "
            "('local/s1', 't', 'assistant', 'an ibis being written', 'pending', 1), "
            "('bob/s1', 't', 'user', 'the ibis of bob', 'complete', 2)"
        )
    finally:
        await conn.close()
    s = PostgresStore(pg_url)
    await s.open()
    try:
        assert await s.schema_version() == len(MIGRATIONS) == 8
        assert await found(s, "ibis", "local") == ["an old ibis"]
        assert await found(s, "ibis", "bob") == ["the ibis of bob"]
    finally:
        await s.aclose()


@pytest.mark.parametrize(
    ("owner", "other"), [("a-b", "a-b-c"), ("A", "a"), ("local", "local2"), ("ünï", "ünï x")]
)
async def test_an_owner_is_one_lexeme_whatever_the_id_holds(
    store: PostgresStore, owner: str, other: str
) -> None:
    mine = await store.add_message(f"{owner}/s", "t", "user", "a rail in the reeds")
    theirs = await store.add_message(f"{other}/s", "t", "user", "another rail")
    assert [h.message_id for h in await store.search(owner, parse_query("rail"), limit=5)] == [mine.id]
    assert [h.message_id for h in await store.search(other, parse_query("rail"), limit=5)] == [theirs.id]


async def test_no_word_is_the_owners_lexeme_and_a_conversation_scopes_it(store: PostgresStore) -> None:
    await store.add_message("alice/s", "t", "user", "owner alice's crane")
    _, pending = await store.begin_turn("alice/s", "t2", "and a stork")
    await store.finish_message(pending.id, "storks and cranes", MessageStatus.COMPLETE)
    assert await found(store, "owner", "bob") == []
    assert sorted(await found(store, "crane*", "alice")) == ["owner alice's crane", "storks and cranes"]
    assert await found(store, "stork*", "alice", key="alice/other") == []
    assert len(await found(store, "stork*", "alice", key="alice/s")) == 2
