"""The ConversationStore contract on SQLite: the list, titles, search kept in step with writes, import."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.errors import InvalidInput, NotFound
from parley.store.base import MessageStatus
from parley.store.conversations import ImportedConversation, ImportedMessage, Term, marked, parse_query
from parley.store.sqlite import MIGRATIONS, SQLiteStore
from parley.store.sqlite_conversations import fts5_query

A, B = "alice", "bob"

#: 50 messages: every fifth about zebras, the rest about the weather; a few special ones
WORDS = ["weather", "rain", "sunny", "cloud", "wind"]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "parley.db")
    await s.open()
    yield s
    await s.aclose()


async def fifty(store: SQLiteStore) -> dict[str, int]:
    """50 finished messages in alice/s1 with known words; returns ids of the special ones."""
    ids: dict[str, int] = {}
    for i in range(50):
        if i == 7:
            text = "the striped zebra crossed the savanna at dawn"
        elif i == 11:
            text = "zebra zebra savanna savanna: a zebra on the savanna"
        elif i == 23:
            text = "a savanna far away"
        elif i == 31:
            text = "photosynthesis needs light"
        else:
            text = f"message {i} about the {WORDS[i % 5]} today"
        msg = await store.add_message(f"{A}/s1", f"t{i}", "user" if i % 2 == 0 else "assistant", text)
        ids[str(i)] = msg.id
    return ids


async def search(store: SQLiteStore, q: str, owner: str = A, key: str | None = None) -> list[int]:
    return [h.message_id for h in await store.search(owner, parse_query(q), limit=50, key=key)]


async def test_exact_words_phrase_and_prefix_find_the_right_messages(store: SQLiteStore) -> None:
    ids = await fifty(store)
    assert await search(store, "photosynthesis") == [ids["31"]]
    assert sorted(await search(store, "zebra")) == sorted([ids["7"], ids["11"]])
    # words in any order: both must be there
    assert sorted(await search(store, "savanna zebra")) == sorted([ids["7"], ids["11"]])
    # a phrase: only the exact sequence
    assert await search(store, '"crossed the savanna"') == [ids["7"]]
    assert await search(store, '"savanna crossed"') == []
    # a prefix
    assert await search(store, "photo*") == [ids["31"]]
    assert await search(store, "photo") == []
    assert len(await search(store, "weath*")) == 10


async def test_a_two_word_query_ranks_the_message_with_more_of_both_first(store: SQLiteStore) -> None:
    ids = await fifty(store)
    assert (await search(store, "zebra savanna"))[0] == ids["11"]
    assert (await search(store, "savanna"))[0] == ids["11"]


async def test_snippets_mark_the_matched_words_as_character_ranges(store: SQLiteStore) -> None:
    await store.add_message(f"{A}/s1", "t", "user", "Ünïcode 😀 first, then the Zebra runs")
    (hit,) = await store.search(A, parse_query("zebra unicode"), limit=5)
    marked_words = [hit.snippet[s:e] for s, e in hit.highlights]
    assert marked_words == ["Ünïcode", "Zebra"]  # diacritics and case folded for matching only


async def test_another_users_words_are_never_found(store: SQLiteStore) -> None:
    await store.add_message(f"{B}/s1", "t", "user", "bob's secret aardvark")
    await store.add_message(f"{A}x/s1", "t", "user", "an aardvark of a user named alicex")
    assert await search(store, "aardvark") == []
    assert len(await search(store, "aardvark", owner=B)) == 1


async def test_the_index_follows_a_reply_from_pending_to_finished_and_a_barge_in_cut(
    store: SQLiteStore,
) -> None:
    _, reply = await store.begin_turn(f"{A}/s1", "t1", "tell me about otters")
    await store.save_partial(reply.id, "otters hold hands while sleeping")
    # a pending reply is not history, so not found either
    assert await search(store, "sleeping") == []
    await store.finish_message(reply.id, "otters hold hands while sleeping in kelp", MessageStatus.COMPLETE)
    assert await search(store, "kelp") == [reply.id]
    # the barge-in: the user heard only the start
    await store.finish_message(reply.id, "otters hold hands", MessageStatus.INTERRUPTED)
    assert await search(store, "kelp") == []
    assert await search(store, "hands") == [reply.id]


async def test_a_crash_recovered_reply_is_indexed_with_its_saved_text(store: SQLiteStore) -> None:
    _, reply = await store.begin_turn(f"{A}/s1", "t1", "q")
    await store.save_partial(reply.id, "halfway through lemurs")
    await store.fail_pending("crashed")
    assert await search(store, "lemurs") == [reply.id]


async def test_clear_and_delete_take_messages_out_of_the_index(store: SQLiteStore) -> None:
    await store.add_message(f"{A}/s1", "t", "user", "quokka one")
    await store.add_message(f"{A}/s2", "t", "user", "quokka two")
    await store.add_message(f"{A}/s3", "t", "user", "quokka three")
    assert len(await search(store, "quokka")) == 3
    await store.clear_session(f"{A}/s1")
    assert await store.delete_conversation(f"{A}/s2")
    hits = await store.search(A, parse_query("quokka"), limit=10)
    assert [h.key for h in hits] == [f"{A}/s3"]
    # the index and the table agree (FTS5's own consistency check)
    await store.db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    assert await store.get_conversation(f"{A}/s2") is None
    assert await store.get_conversation(f"{A}/s1") is not None  # cleared, not deleted


async def test_search_within_one_conversation(store: SQLiteStore) -> None:
    a = await store.add_message(f"{A}/s1", "t", "user", "narwhal here")
    await store.add_message(f"{A}/s2", "t", "user", "narwhal there")
    assert await search(store, "narwhal", key=f"{A}/s1") == [a.id]


async def test_writes_make_and_touch_the_session_row(store: SQLiteStore) -> None:
    await store.begin_turn(f"{A}/old", "t1", "first")
    await store.begin_turn(f"{A}/new", "t1", "second")
    page = await store.list_conversations(A, limit=10)
    assert [c.key for c in page] == [f"{A}/new", f"{A}/old"]
    assert [c.message_count for c in page] == [1, 1]  # the pending replies do not count yet
    await store.add_message(f"{A}/old", "t2", "user", "again")
    page = await store.list_conversations(A, limit=10)
    assert [c.key for c in page] == [f"{A}/old", f"{A}/new"]
    assert page[0].updated_at > page[0].created_at
    assert await store.list_conversations(B, limit=10) == []


async def test_pages_follow_each_other_without_gaps_or_repeats(store: SQLiteStore) -> None:
    for i in range(7):
        await store.create_conversation(f"{A}/c{i}")
    seen: list[str] = []
    before = None
    while page := await store.list_conversations(A, limit=3, before=before):
        seen += [c.key for c in page]
        before = (page[-1].updated_at, page[-1].key)
    assert sorted(seen) == sorted(f"{A}/c{i}" for i in range(7)) and len(seen) == 7


async def test_titles_first_one_only_and_renames(store: SQLiteStore) -> None:
    await store.create_conversation(f"{A}/s")
    assert await store.set_first_title(f"{A}/s", "first words")
    assert not await store.set_first_title(f"{A}/s", "later words")
    renamed = await store.rename_conversation(f"{A}/s", "My trip")
    assert renamed.title == "My trip"
    with pytest.raises(NotFound):
        await store.rename_conversation(f"{A}/missing", "x")


async def test_import_is_all_or_nothing(store: SQLiteStore) -> None:
    good = ImportedConversation(
        "kept", 1.0, 2.0, [ImportedMessage("user", "wombat", MessageStatus.COMPLETE, 1.0, "t1")]
    )
    # a message the schema refuses (a role CHECK) fails the second conversation mid-way
    bad = ImportedConversation(
        "broken",
        1.0,
        2.0,
        [ImportedMessage("robot", "x", MessageStatus.COMPLETE, 1.0, "t1")],  # type: ignore[arg-type]
    )
    with pytest.raises(sqlite3.IntegrityError):
        await store.import_conversations(A, [good, bad], ["i1", "i2"])
    assert await store.list_conversations(A, limit=10) == []
    assert await search(store, "wombat") == []
    made = await store.import_conversations(A, [good], ["i1"])
    assert [(c.key, c.title, c.message_count) for c in made] == [(f"{A}/i1", "kept", 1)]
    assert await search(store, "wombat") != []


async def test_the_migration_backfills_sessions_and_the_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    db.executemany(
        "INSERT INTO messages (session_id, turn_id, role, content, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("local/s1", "t1", "user", "Plan my\ntrip to Lisbon", "complete", 10.0),
            ("local/s1", "t1", "assistant", "Lisbon has trams", "complete", 11.0),
            ("local/s1", "t2", "assistant", "pending tram text", "pending", 12.0),
        ],
    )
    db.commit()
    db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        (c,) = await store.list_conversations("local", limit=5)
        assert (c.key, c.title, c.created_at, c.updated_at, c.message_count) == (
            "local/s1",
            "Plan my trip to Lisbon",
            10.0,
            12.0,
            2,
        )
        assert len(await search(store, "lisbon", owner="local")) == 2
        assert await search(store, "pending", owner="local") == []
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("q", "terms"),
    [
        ("zebra  savanna", (Term("zebra"), Term("savanna"))),
        ('"a phrase" word*', (Term("a phrase", phrase=True), Term("word", prefix=True))),
        ('unclosed "quote here', (Term("unclosed"), Term("quote here", phrase=True))),
        ("NEAR(a b) OR col:x", (Term("NEAR(a"), Term("b)"), Term("OR"), Term("col:x"))),
    ],
)
def test_queries_parse_into_terms(q: str, terms: tuple[Term, ...]) -> None:
    assert parse_query(q) == terms


@pytest.mark.parametrize("q", ["", "   ", '""', "*** !!! ___", "x" * 10_000, " ".join(["w"] * 17)])
def test_bad_queries_are_refused_naming_the_field(q: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_query(q)
    assert refused.value.field == "q"


@pytest.mark.parametrize(
    "q", ["NEAR(a b)", "col:x", '"x', "a AND", "OR", "NOT x", "^start", "a + b", "{content}: x", "x*y*", "-x"]
)
async def test_fts5_syntax_in_a_query_is_only_text(store: SQLiteStore, q: str) -> None:
    await store.add_message(f"{A}/s", "t", "user", "near col x and or not start content y")
    # never an FTS5 syntax error: each term is one quoted string
    await store.search(A, parse_query(q), limit=5)
    assert fts5_query((Term('say "hi"'),)) == '"say ""hi"""'


def test_marked_snippets() -> None:
    assert marked("a \ue000b\ue001 c \ue000dd\ue001") == ("a b c dd", ((2, 3), (6, 8)))
