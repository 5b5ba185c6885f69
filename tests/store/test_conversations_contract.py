"""The ConversationStore contract: every test runs against SQLite and PostgreSQL (tests/store/conftest.py)."""

from __future__ import annotations

import pytest

from parley.errors import NotFound
from parley.store.base import MessageStatus
from parley.store.conversations import ImportedConversation, ImportedMessage, parse_query
from tests.store.conftest import AnyStore


async def turn(store: AnyStore, key: str, question: str, answer: str) -> None:
    _, reply = await store.begin_turn(key, "t", question)
    await store.finish_message(reply.id, answer, MessageStatus.COMPLETE)


async def test_writes_make_conversations_listed_newest_first_per_owner(store: AnyStore) -> None:
    await turn(store, "u1/a", "first", "one")
    await turn(store, "u1/b", "second", "two")
    await turn(store, "u2/c", "other user", "x")
    await store.add_message("u1/a", "t2", "user", "again")  # a write moves a to the top
    _, pending = await store.begin_turn("u1/a", "t3", "and again")
    listed = await store.list_conversations("u1", limit=10)
    assert [c.key for c in listed] == ["u1/a", "u1/b"]
    assert [c.message_count for c in listed] == [4, 2]  # the pending reply is not history yet
    assert listed[0].created_at <= listed[0].updated_at
    page = await store.list_conversations("u1", limit=1, before=(listed[0].updated_at, listed[0].key))
    assert [c.key for c in page] == ["u1/b"]
    assert await store.conversation_count("u1") == 2 and await store.conversation_count("u2") == 1
    assert await store.get_conversation("u3/a") is None
    assert pending.status == MessageStatus.PENDING


async def test_titles_create_rename_and_delete(store: AnyStore) -> None:
    made = await store.create_conversation("u1/new", "Plans")
    assert (made.title, made.message_count) == ("Plans", 0)
    assert (await store.create_conversation("u1/new")).title == "Plans"  # made once
    await turn(store, "u1/x", "q", "a")
    assert await store.set_first_title("u1/x", "First") is True
    assert await store.set_first_title("u1/x", "Second") is False  # only a conversation without one
    assert (await store.rename_conversation("u1/x", "Renamed")).title == "Renamed"
    with pytest.raises(NotFound):
        await store.rename_conversation("u1/none", "t")
    assert await store.delete_conversation("u1/x") is True
    assert await store.delete_conversation("u1/x") is False
    assert await store.list_messages("u1/x") == []
    assert [c.key for c in await store.list_conversations("u1", limit=10)] == ["u1/new"]


async def test_search_matches_every_term_of_finished_messages_of_the_owner_only(store: AnyStore) -> None:
    await turn(store, "u1/a", "where is the blue house", "the blue house is by the lake")
    await turn(store, "u1/b", "a red house", "Red houses at the café")
    await turn(store, "u2/c", "blue house of another user", "x")
    _, pending = await store.begin_turn("u1/d", "t", "q")
    await store.save_partial(pending.id, "a blue partial reply")

    async def found(q: str, key: str | None = None) -> set[tuple[str, str]]:
        hits = await store.search("u1", parse_query(q), limit=20, key=key)
        return {(h.key, h.role) for h in hits}

    assert await found("blue house") == {("u1/a", "user"), ("u1/a", "assistant")}
    assert await found('"house is by"') == {("u1/a", "assistant")}
    assert await found("hous*") == {
        ("u1/a", "user"),
        ("u1/a", "assistant"),
        ("u1/b", "user"),
        ("u1/b", "assistant"),
    }
    assert await found("CAFE") == {("u1/b", "assistant")}  # case and accents do not matter
    assert await found("house", key="u1/b") == {("u1/b", "user")}
    assert await found("partial") == set()  # a pending reply is not indexed
    await store.finish_message(pending.id, "a blue partial reply, done", MessageStatus.COMPLETE)
    assert await found("partial") == {("u1/d", "assistant")}
    await store.clear_session("u1/d")
    assert await found("partial") == set()


async def test_a_hit_shows_a_snippet_with_its_matches_marked(store: AnyStore) -> None:
    words = " ".join(f"w{i}" for i in range(80))
    await turn(store, "u1/a", f"{words} needle {words}", "short needle")
    hits = await store.search("u1", parse_query("needle"), limit=5)
    assert {h.role for h in hits} == {"user", "assistant"}
    for hit in hits:
        assert hit.highlights, hit
        assert all(hit.snippet[a:b].lower() == "needle" for a, b in hit.highlights)
        assert hit.title == "" and hit.key == "u1/a"
    long = next(h for h in hits if h.role == "user")
    assert long.snippet.startswith("…") and long.snippet.endswith("…")
    assert len(long.snippet) < 200
    short = next(h for h in hits if h.role == "assistant")
    assert short.snippet == "short needle"


async def test_import_is_all_or_nothing_and_exports_what_it_stored(store: AnyStore) -> None:
    conv = ImportedConversation(
        "Imported",
        10.0,
        20.0,
        [
            ImportedMessage("user", "hello", MessageStatus.COMPLETE, 10.0, "t1"),
            ImportedMessage("assistant", "hi", MessageStatus.COMPLETE, 11.0, "t1", finish_reason="stop"),
        ],
    )
    [made] = await store.import_conversations("u1", [conv], ["imp1"])
    assert (made.key, made.title, made.message_count) == ("u1/imp1", "Imported", 2)
    [(exported, messages)] = await store.export_conversations("u1", "u1/imp1")
    assert exported == made
    assert [(m.role, m.content, m.finish_reason) for m in messages] == [
        ("user", "hello", None),
        ("assistant", "hi", "stop"),
    ]
    bad = ImportedConversation(
        "Bad", 1.0, 2.0, [ImportedMessage("system", "x", MessageStatus.COMPLETE, 1.0, "t")]
    )  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - the backend's own integrity error (role is checked)
        await store.import_conversations("u1", [conv, bad], ["imp2", "imp3"])
    assert await store.get_conversation("u1/imp2") is None
    assert await store.list_messages("u1/imp2") == []
    assert await store.conversation_count("u1") == 1
    with pytest.raises(NotFound):
        await store.export_conversations("u1", "u1/none")


async def test_an_import_onto_a_taken_id_fails_and_leaves_that_conversation(store: AnyStore) -> None:
    await turn(store, "u1/taken", "kept question", "kept answer")
    conv = ImportedConversation(
        "New", 1.0, 2.0, [ImportedMessage("user", "new", MessageStatus.COMPLETE, 1.0, "t")]
    )
    with pytest.raises(Exception):  # noqa: B017 - the backend's own integrity error
        await store.import_conversations("u1", [conv, conv], ["fresh", "taken"])
    assert await store.get_conversation("u1/fresh") is None
    assert [m.content for m in await store.list_messages("u1/taken")] == ["kept question", "kept answer"]


async def test_a_turn_that_replaces_a_branch_hides_it_from_history_counts_and_search(store: AnyStore) -> None:
    await turn(store, "u1/e", "walrus question", "walrus answer")
    await turn(store, "u1/e", "zebra question", "zebra answer")
    zebra = next(m for m in await store.list_messages("u1/e") if m.content == "zebra question")
    user, reply = await store.begin_turn("u1/e", "t9", "okapi question", replace_from=zebra.id)
    await store.finish_message(reply.id, "okapi answer", MessageStatus.COMPLETE)
    assert [m.content for m in await store.list_messages("u1/e")] == [
        "walrus question",
        "walrus answer",
        "okapi question",
        "okapi answer",
    ]
    assert user.id > zebra.id
    (listed,) = [c for c in await store.list_conversations("u1", limit=10) if c.key == "u1/e"]
    assert listed.message_count == 4
    assert await store.search("u1", parse_query("zebra"), limit=10) == []
    assert [h.message_id for h in await store.search("u1", parse_query("walrus question"), limit=10)]
    # replacing nothing that exists (an id past the end) changes nothing but adds the turn
    await store.begin_turn("u1/e", "t10", "again", replace_from=10**9)
    assert [m.content for m in await store.list_messages("u1/e")][:4] == [
        "walrus question",
        "walrus answer",
        "okapi question",
        "okapi answer",
    ]
