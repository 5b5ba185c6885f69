"""SQLite's search index from migration 8: keyed by owner and conversation, written in batches.

A finished message is queued and indexed in a batch (before a search, or once INDEX_BATCH are
queued); removing one is immediate. Whatever the order of writes, searches see every finished
message of their owner alone and FTS5's own check finds the index in step with the messages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.store import sqlite_conversations
from parley.store.base import MessageStatus
from parley.store.conversations import parse_query
from parley.store.sqlite import MIGRATIONS, SQLiteStore
from parley.store.sqlite_conversations import TOKEN_MARK

A = "alice"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "parley.db")
    await s.open()
    yield s
    await s.aclose()


async def queued(store: SQLiteStore) -> int:
    async with store.db.execute("SELECT COUNT(*) FROM search_queue") as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def found(store: SQLiteStore, q: str, owner: str = A, key: str | None = None) -> list[str]:
    return [h.snippet for h in await store.search(owner, parse_query(q), limit=50, key=key)]


async def in_step(store: SQLiteStore) -> None:
    """FTS5's integrity check: the index holds exactly the searchable messages' tokens."""
    await store.index_queued()
    await store.db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    async with store.db.execute("SELECT COUNT(*) FROM messages_searchable") as cur:
        searchable = await cur.fetchone()
    async with store.db.execute("SELECT COUNT(*) FROM messages_fts_docsize") as cur:
        indexed = await cur.fetchone()
    assert searchable == indexed


async def test_a_search_sees_what_is_still_queued_and_indexes_it(store: SQLiteStore) -> None:
    await store.add_message(f"{A}/s1", "t1", "user", "a heron by the river")
    _, pending = await store.begin_turn(f"{A}/s1", "t2", "where do herons nest")
    assert await queued(store) == 2  # the user messages; the pending reply is not searchable yet
    await store.save_partial(pending.id, "herons nest in tall")
    assert await queued(store) == 2
    await store.finish_message(pending.id, "herons nest in tall trees", MessageStatus.COMPLETE)
    assert await queued(store) == 3
    assert sorted(await found(store, "heron*")) == [
        "a heron by the river",
        "herons nest in tall trees",
        "where do herons nest",
    ]
    assert await queued(store) == 0
    await in_step(store)


async def test_the_write_that_fills_a_batch_indexes_it(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_conversations, "INDEX_BATCH", 3)
    for i in range(2):
        await store.add_message(f"{A}/s1", f"t{i}", "user", f"egret {i}")
    assert await queued(store) == 2
    await store.add_message(f"{A}/s1", "t2", "user", "egret 2")
    assert await queued(store) == 0
    async with store.db.execute("SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'egret'") as cur:
        assert await cur.fetchone() == (3,)


async def test_removing_messages_queued_or_indexed_keeps_the_index_in_step(store: SQLiteStore) -> None:
    key = f"{A}/s1"
    first = await store.add_message(key, "t1", "user", "kestrel one")
    await found(store, "kestrel")  # indexed
    second = await store.add_message(key, "t2", "user", "kestrel two")  # queued
    assert await queued(store) == 1
    # an edit of the first: both leave search (one indexed, one queued), the new one is queued
    await store.begin_turn(key, "t3", "kestrel three", replace_from=first.id)
    assert await found(store, "kestrel") == ["kestrel three"]
    await in_step(store)
    # a queued message deleted, and an indexed one cut back and deleted
    other = await store.add_message(f"{A}/s2", "t", "user", "kestrel four")
    assert await store.delete_conversation(f"{A}/s2")
    _, pending = await store.begin_turn(key, "t4", "tell me")
    await store.finish_message(pending.id, "kestrel facts", MessageStatus.COMPLETE)
    assert sorted(await found(store, "kestrel")) == ["kestrel facts", "kestrel three"]
    await store.finish_message(pending.id, "cut", MessageStatus.INTERRUPTED)
    assert await found(store, "kestrel") == ["kestrel three"]
    await in_step(store)
    await store.clear_session(key)
    assert await found(store, "kestrel") == [] and await queued(store) == 0
    await in_step(store)
    assert {first.id, second.id, other.id}.isdisjoint(
        h.message_id for h in await store.search(A, parse_query("kestrel"), limit=9)
    )


async def test_a_search_while_another_process_holds_the_database_still_answers(
    store: SQLiteStore, tmp_path: Path
) -> None:
    await store.add_message(f"{A}/s1", "t", "user", "a dipper")  # queued
    await store.db.execute("PRAGMA busy_timeout = 50")  # not the 5 s of a real wait
    other = sqlite3.connect(tmp_path / "parley.db")
    other.execute("BEGIN IMMEDIATE")  # e.g. `parley users add` writing
    try:
        assert await found(store, "dipper") == []  # the batch waits, the search does not
        assert await queued(store) == 1
    finally:
        other.rollback()
        other.close()
    assert await found(store, "dipper") == ["a dipper"]
    await in_step(store)


@pytest.mark.parametrize("owner", ["a-b", "A", "ünï cödé", "u.x", "1"])
async def test_an_owner_is_one_token_whatever_the_id_holds(store: SQLiteStore, owner: str) -> None:
    # ids that share a token, a prefix or a case with `owner` are other owners
    others = {"a-b": "a-b-c", "A": "a", "ünï cödé": "ünï", "u.x": "u", "1": "10"}
    mine = await store.add_message(f"{owner}/s", "t", "user", "a shared word: plover")
    theirs = await store.add_message(f"{others[owner]}/s", "t", "user", "plover too")
    hits = await store.search(owner, parse_query("plover"), limit=5)
    assert [h.message_id for h in hits] == [mine.id]
    hits = await store.search(others[owner], parse_query("plover"), limit=5)
    assert [h.message_id for h in hits] == [theirs.id]


async def test_no_word_of_a_message_is_a_scope_token(store: SQLiteStore) -> None:
    # bob writes alice's owner and conversation tokens into his message: it stays his
    forged = f"{TOKEN_MARK}{A.encode().hex().upper()} {TOKEN_MARK}{f'{A}/s1'.encode().hex().upper()} gannet"
    await store.add_message("bob/s1", "t", "user", forged)
    mine = await store.add_message(f"{A}/s1", "t", "user", "my gannet")
    for key in (None, f"{A}/s1"):
        hits = await store.search(A, parse_query("gannet"), limit=5, key=key)
        assert [h.message_id for h in hits] == [mine.id]
    (hit,) = await store.search("bob", parse_query("gannet"), limit=5)
    assert TOKEN_MARK not in hit.snippet and hit.snippet.endswith("gannet")
    # and a query cannot name a token either
    assert await store.search(A, parse_query(forged.split()[0]), limit=5) == []


async def test_one_owner_alone_and_among_others_ranks_alike(store: SQLiteStore) -> None:
    texts = ["tern", "tern tern tern", "a tern and a gull", "gull", "tern tern"]
    for i, text in enumerate(texts):
        await store.add_message(f"{A}/s{i % 2}", f"t{i}", "user", text)
    alone = await store.search(A, parse_query("tern"), limit=10)
    await store.add_message("bob/s", "t", "user", "tern here as well")
    among = await store.search(A, parse_query("tern"), limit=10)
    assert [h.message_id for h in among] == [h.message_id for h in alone]
    assert alone[0].snippet == "tern tern tern"


async def test_a_conversation_scope_is_its_key_alone(store: SQLiteStore) -> None:
    one = await store.add_message(f"{A}/s1", "t", "user", "a puffin")
    await store.add_message(f"{A}/s10", "t", "user", "another puffin")
    await store.add_message(f"{A}/s1.x", "t", "user", "a third puffin")
    hits = await store.search(A, parse_query("puffin"), limit=5, key=f"{A}/s1")
    assert [h.message_id for h in hits] == [one.id]
    assert len(await store.search(A, parse_query("puffin"), limit=5)) == 3


async def test_migration_8_rebuilds_the_index_of_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:7], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    db.executemany(
        "INSERT INTO messages (session_id, turn_id, role, content, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("local/s1", "t1", "user", "an old osprey", "complete", 10.0),
            ("local/s1", "t1", "assistant", "an osprey replaced", "replaced", 11.0),
            ("local/s1", "t2", "assistant", "an osprey being written", "pending", 12.0),
            ("bob/s1", "t1", "user", "bob's osprey", "complete", 13.0),
        ],
    )
    db.commit()
    db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 8
        assert await found(store, "osprey", owner="local") == ["an old osprey"]
        assert await found(store, "osprey", owner="bob") == ["bob's osprey"]
        await in_step(store)
    finally:
        await store.aclose()
