"""The Store contract: every test runs against SQLite and PostgreSQL (tests/store/conftest.py)."""

from __future__ import annotations

import asyncio

from parley.store.base import MessageStatus, Store


async def test_messages_round_trip_in_order(store: Store) -> None:
    u = await store.add_message("s1", "t1", "user", "hello ünïcode ✓")
    a = await store.add_message("s1", "t1", "assistant", "", MessageStatus.PENDING)
    assert await store.list_messages("s1") == [u]  # pending replies are not history yet
    done = await store.finish_message(a.id, "hi!", MessageStatus.COMPLETE)
    assert (done.content, done.status, done.turn_id) == ("hi!", MessageStatus.COMPLETE, "t1")
    listed = await store.list_messages("s1")
    assert [(m.role, m.content) for m in listed] == [("user", "hello ünïcode ✓"), ("assistant", "hi!")]
    assert listed[0].created_at <= listed[1].created_at


async def test_limit_keeps_the_newest(store: Store) -> None:
    for i in range(6):
        await store.add_message("s", f"t{i}", "user", f"m{i}")
    assert [m.content for m in await store.list_messages("s", limit=2)] == ["m4", "m5"]


async def test_sessions_are_isolated_and_clear_removes_one(store: Store) -> None:
    await store.add_message("a", "t", "user", "x")
    await store.add_message("b", "t", "user", "y")
    assert await store.clear_session("a") == 1
    assert await store.list_messages("a") == []
    assert [m.content for m in await store.list_messages("b")] == ["y"]


async def test_failed_and_cancelled_keep_their_status_and_error(store: Store) -> None:
    a = await store.add_message("s", "t", "assistant", "", MessageStatus.PENDING)
    await store.finish_message(a.id, "part", MessageStatus.FAILED, "upstream said no")
    (m,) = await store.list_messages("s")
    assert (m.status, m.error, m.content) == (MessageStatus.FAILED, "upstream said no", "part")


async def test_fail_pending_marks_only_pending(store: Store) -> None:
    await store.add_message("s", "t1", "user", "q")
    await store.add_message("s", "t1", "assistant", "", MessageStatus.PENDING)
    assert await store.fail_pending("crashed") == 1
    assert [m.status for m in await store.list_messages("s")] == [
        MessageStatus.COMPLETE,
        MessageStatus.FAILED,
    ]
    assert await store.fail_pending("crashed") == 0


async def test_a_partial_save_fills_a_pending_reply_and_never_a_finished_one(store: Store) -> None:
    a = await store.add_message("s", "t", "assistant", "", MessageStatus.PENDING)
    await store.save_partial(a.id, "the text so")
    await store.fail_pending("crashed")  # what the next start does after a kill -9
    (m,) = await store.list_messages("s")
    assert (m.status, m.content) == (MessageStatus.FAILED, "the text so")
    await store.save_partial(a.id, "the text so far, saved late")
    assert (await store.list_messages("s"))[0].content == "the text so"


async def test_concurrent_writers_lose_nothing(store: Store) -> None:
    await asyncio.gather(*(store.add_message("s", f"t{i}", "user", str(i)) for i in range(200)))
    assert sorted(int(m.content) for m in await store.list_messages("s")) == list(range(200))


async def test_begin_turn_stores_the_user_message_and_a_pending_reply(store: Store) -> None:
    earlier = await store.add_message("s", "t0", "user", "before")
    user, pending = await store.begin_turn("s", "t1", "hello ünïcode ✓")
    assert (user.role, user.content, user.status, user.turn_id) == (
        "user",
        "hello ünïcode ✓",
        MessageStatus.COMPLETE,
        "t1",
    )
    assert (pending.role, pending.content, pending.status) == ("assistant", "", MessageStatus.PENDING)
    assert earlier.id < user.id < pending.id
    # what it returns is what is stored: the user message is history, the reply not yet
    assert await store.list_messages("s") == [earlier, user]
    done = await store.finish_message(pending.id, "hi", MessageStatus.COMPLETE)
    assert await store.list_messages("s") == [earlier, user, done]


async def test_begin_turn_leaves_a_pending_reply_for_crash_recovery(store: Store) -> None:
    await store.begin_turn("s", "t1", "q")
    assert await store.fail_pending("crashed") == 1
    assert [(m.role, m.status) for m in await store.list_messages("s")] == [
        ("user", MessageStatus.COMPLETE),
        ("assistant", MessageStatus.FAILED),
    ]


async def test_concurrent_turns_each_get_their_own_pair(store: Store) -> None:
    pairs = await asyncio.gather(*(store.begin_turn(f"s{i % 5}", f"t{i}", str(i)) for i in range(100)))
    for i, (user, pending) in enumerate(pairs):
        assert (user.turn_id, pending.turn_id, user.content) == (f"t{i}", f"t{i}", str(i))
        assert user.session_id == pending.session_id == f"s{i % 5}"
    ids = [m.id for pair in pairs for m in pair]
    assert len(set(ids)) == 200
    await store.fail_pending("crashed")
    for i in range(5):
        listed = await store.list_messages(f"s{i}")
        assert len(listed) == 40
        # each reply row carries its own turn: ids were not swapped between concurrent calls
        assert all(m.turn_id == listed[j - j % 2].turn_id for j, m in enumerate(listed))


async def test_a_finish_reason_is_kept_and_shown_on_the_history_entry(store: Store) -> None:
    a = await store.add_message("s", "t", "assistant", "", MessageStatus.PENDING)
    cut = await store.finish_message(a.id, "You said", MessageStatus.COMPLETE, finish_reason="length")
    b = await store.add_message("s", "t2", "assistant", "", MessageStatus.PENDING)
    await store.finish_message(b.id, "x", MessageStatus.CANCELLED)
    listed = await store.list_messages("s")
    assert listed[0] == cut and cut.finish_reason == "length"
    assert listed[0].to_wire()["finishReason"] == "length"
    assert listed[1].finish_reason is None and "finishReason" not in listed[1].to_wire()
