"""Fencing tokens: every test runs against SQLite and PostgreSQL (tests/store/conftest.py).

A session's newest owner holds the fence `take_session` returned; a write made with an older one
raises Fenced and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from parley.errors import Fenced
from parley.store.base import MESSAGE_COLUMNS, Message, MessageStatus, message_from_row
from parley.store.postgres import PostgresStore
from parley.store.sqlite import SQLiteStore
from tests.store.conftest import AnyStore, StoreFactory

S = "alice/s1"


async def rows(store: AnyStore, session_id: str) -> list[Message]:
    """Every stored message of the session, pending and replaced ones too, in id order."""
    if isinstance(store, SQLiteStore):
        sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ? ORDER BY id"
        async with store.db.execute(sql, (session_id,)) as cur:
            return [message_from_row(r) for r in await cur.fetchall()]
    sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 ORDER BY id"
    return [message_from_row(r) for r in await store.pool.fetch(sql, session_id)]


async def a_session_with_a_pending_reply(store: AnyStore) -> tuple[Message, Message]:
    """S taken once (fence 1), one earlier finished turn and one pending reply with partial text."""
    assert await store.take_session(S) == 1
    _, first = await store.begin_turn(S, "t1", "hello", fence=1)
    await store.finish_message(first.id, "hi", MessageStatus.COMPLETE, fence=1)
    user, reply = await store.begin_turn(S, "t2", "and then?", fence=1)
    await store.save_partial(reply.id, "so far", fence=1)
    return user, reply


#: each fenced write, given the session's pending reply and the fence to write with
Write = Callable[[AnyStore, Message, int], Awaitable[object]]
WRITES: dict[str, Write] = {
    "add_message": lambda s, _, f: s.add_message(S, "t3", "user", "sneaked in", fence=f),
    "begin_turn": lambda s, _, f: s.begin_turn(S, "t3", "sneaked in", fence=f),
    "begin_turn_replacing": lambda s, r, f: s.begin_turn(S, "t3", "edited", replace_from=r.id - 1, fence=f),
    "finish_message": lambda s, r, f: s.finish_message(r.id, "the end", MessageStatus.COMPLETE, fence=f),
    "save_partial": lambda s, r, f: s.save_partial(r.id, "so far and more", fence=f),
    "clear_session": lambda s, _, f: s.clear_session(S, fence=f),
    "fail_pending_session": lambda s, _, f: s.fail_pending_session(S, "taken over", fence=f),
}


async def test_takes_count_up_per_session_and_make_no_conversation(store: AnyStore) -> None:
    assert [await store.take_session(S) for _ in range(3)] == [1, 2, 3]
    assert await store.take_session("alice/s2") == 1
    assert await store.take_session("bob/s1") == 1
    assert await store.take_session(S) == 4
    assert not await store.session_exists(S)
    assert await store.session_count("alice") == 0


@pytest.mark.parametrize("write", WRITES)
async def test_a_write_with_the_current_fence_lands(store: AnyStore, write: str) -> None:
    _, reply = await a_session_with_a_pending_reply(store)
    before = await rows(store, S)
    await WRITES[write](store, reply, 1)
    assert await rows(store, S) != before


@pytest.mark.parametrize("write", WRITES)
async def test_after_a_newer_take_an_old_fence_changes_nothing(store: AnyStore, write: str) -> None:
    _, reply = await a_session_with_a_pending_reply(store)
    assert await store.take_session(S) == 2
    before = await rows(store, S)
    with pytest.raises(Fenced, match=r"session alice/s1 is owned by a newer writer \(fence 2 > 1\)"):
        await WRITES[write](store, reply, 1)
    assert await rows(store, S) == before
    assert [m.content for m in before] == ["hello", "hi", "and then?", "so far"]
    await WRITES[write](store, reply, 2)  # the new owner's write lands
    assert await rows(store, S) != before


@pytest.mark.parametrize("write", WRITES)
async def test_a_fence_never_handed_out_changes_nothing(store: AnyStore, write: str) -> None:
    _, reply = await a_session_with_a_pending_reply(store)
    before = await rows(store, S)
    with pytest.raises(Fenced, match="fence 1, not 2"):
        await WRITES[write](store, reply, 2)
    assert await rows(store, S) == before


@pytest.mark.parametrize("write", WRITES)
async def test_a_session_never_taken_refuses_a_fenced_write(store: AnyStore, write: str) -> None:
    _, reply = await store.begin_turn(S, "t1", "hello")
    before = await rows(store, S)
    with pytest.raises(Fenced, match="session alice/s1 was never taken"):
        await WRITES[write](store, reply, 1)
    assert await rows(store, S) == before


async def test_without_a_fence_nothing_is_checked(store: AnyStore) -> None:
    await store.take_session(S)
    await store.take_session(S)
    _, reply = await store.begin_turn(S, "t1", "hello")
    await store.save_partial(reply.id, "hi so")
    await store.finish_message(reply.id, "hi", MessageStatus.COMPLETE)
    await store.add_message(S, "t2", "user", "more")
    assert [m.content for m in await store.list_messages(S)] == ["hello", "hi", "more"]
    assert await store.clear_session(S) == 3


async def test_a_fenced_write_of_a_missing_message_is_what_it_was_unfenced(store: AnyStore) -> None:
    await store.take_session(S)
    with pytest.raises(KeyError):
        await store.finish_message(999_999, "x", MessageStatus.COMPLETE, fence=1)
    await store.save_partial(999_999, "x", fence=1)  # a no-op, as without a fence


async def test_a_take_through_another_store_fences_this_one(new_store: StoreFactory) -> None:
    """Two nodes on one database: the one that took the session last is the only writer."""
    old, new = new_store(), new_store()
    await old.open()
    await new.open()
    _, reply = await a_session_with_a_pending_reply(old)
    fence = await new.take_session(S)
    with pytest.raises(Fenced):
        await old.finish_message(reply.id, "late", MessageStatus.COMPLETE, fence=1)
    (failed,) = await new.fail_pending_session(S, "its node stopped", fence=fence)
    assert (failed.id, failed.content, failed.status) == (reply.id, "so far", MessageStatus.FAILED)


async def test_fail_pending_session_fails_that_sessions_pending_replies_only(
    new_store: StoreFactory,
) -> None:
    here, there = new_store(), new_store()
    there.node = "another-node"
    await here.open()
    await there.open()
    _, mine = await a_session_with_a_pending_reply(here)
    _, theirs = await there.begin_turn(S, "t3", "one more", fence=1)  # another node's pending reply
    await there.save_partial(theirs.id, "half", fence=1)
    await here.begin_turn("alice/s2", "t1", "other session")

    fence = await here.take_session(S)
    with pytest.raises(Fenced):
        await here.fail_pending_session(S, "taken over", fence=fence - 1)
    assert [m.status for m in await rows(here, S)].count(MessageStatus.PENDING) == 2

    failed = await here.fail_pending_session(S, "taken over", fence=fence)
    assert [(m.id, m.content, m.status, m.error) for m in failed] == [
        (mine.id, "so far", MessageStatus.FAILED, "taken over"),
        (theirs.id, "half", MessageStatus.FAILED, "taken over"),
    ]
    assert failed == [m for m in await rows(here, S) if m.id in (mine.id, theirs.id)]
    assert [m.status for m in await rows(here, "alice/s2")][-1] == MessageStatus.PENDING
    assert await here.fail_pending_session(S, "taken over", fence=fence) == []


async def test_pending_sessions_names_each_session_with_a_pending_reply_once(store: AnyStore) -> None:
    assert await store.pending_sessions() == []
    await store.begin_turn("alice/s1", "t1", "one")
    await store.begin_turn("alice/s1", "t2", "two")
    _, done = await store.begin_turn("bob/s1", "t1", "three")
    await store.begin_turn("carol/s1", "t1", "four")
    await store.finish_message(done.id, "answered", MessageStatus.COMPLETE)
    assert sorted(await store.pending_sessions()) == ["alice/s1", "carol/s1"]
    assert len(await store.pending_sessions(limit=1)) == 1
    fence = await store.take_session("alice/s1")
    await store.fail_pending_session("alice/s1", "its node stopped", fence=fence)
    assert await store.pending_sessions() == ["carol/s1"]


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite has one connection: no take in flight
async def test_a_take_in_flight_fences_the_write_that_waits_for_it(store: AnyStore) -> None:
    """PostgreSQL: a write that meets an uncommitted take waits for it, then sees the new fence."""
    assert isinstance(store, PostgresStore)
    _, reply = await a_session_with_a_pending_reply(store)
    taker = await store.pool.acquire()
    watcher = await store.pool.acquire()
    try:
        take = taker.transaction()
        await take.start()
        assert (
            await taker.fetchval(
                "INSERT INTO fences (session, fence) VALUES ($1, 1) "
                "ON CONFLICT (session) DO UPDATE SET fence = fences.fence + 1 RETURNING fence",
                S,
            )
            == 2
        )
        write = asyncio.ensure_future(store.save_partial(reply.id, "written late", fence=1))
        # each round trip lets the write run; it waits once the server shows it blocked by the take
        blocked = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
        while not write.done() and await watcher.fetchval(blocked, taker.get_server_pid()) == 0:
            pass
        assert not write.done(), "the write went ahead of the take holding the fence row"
        await take.commit()
        with pytest.raises(Fenced, match=r"fence 2 > 1"):
            await write
    finally:
        await store.pool.release(taker)
        await store.pool.release(watcher)
    assert [m.content for m in await rows(store, S)][-1] == "so far"
