"""Live sessions: turns one at a time, storage before the model, restarts, idle release."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from parley.bus.memory import LocalBus
from parley.errors import Busy, TurnCancelled
from parley.providers.testing import EchoChat
from parley.sessions.events import Event
from parley.sessions.keys import session_key
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.store.base import MessageStatus
from parley.store.sqlite import SQLiteStore
from parley.store.users import LOCAL_USER
from tests.conftest import ServerFactory, make_settings

SID = "session-turns"
CONFIG = SessionConfig(system_prompt="sys", history_limit=20, max_tokens=64, max_queued_turns=4)


async def until_event(feed: asyncio.Queue[Event | None], kind: str, count: int = 1) -> None:
    """Read a turn's own feed (`turn.watch()`) until its `count`-th event of type `kind`."""
    seen = 0
    while seen < count:
        event = await feed.get()
        assert event is not None, f"the turn ended before {count} {kind} event(s)"
        seen += event.type == kind


async def test_five_concurrent_sends_give_strictly_alternating_history(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat(first_token_delay=0.01, token_interval=0.005))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        texts = [f"message number {i}" for i in range(5)]
        replies = await asyncio.gather(
            *(client.post("/api/chat", json={"message": t, "sessionId": SID}) for t in texts)
        )
        for text, r in zip(texts, replies, strict=True):
            assert r.json()["response"] == f"You said: {text}"  # each reply answers its own message
        messages = (await client.get("/api/history", params={"sessionId": SID})).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 5
    for user, assistant in zip(messages[::2], messages[1::2], strict=True):
        assert assistant["content"] == f"You said: {user['content']}"
        assert assistant["turnId"] == user["turnId"]
    assert sorted(m["content"] for m in messages[::2]) == texts


async def test_history_survives_a_restart_and_the_model_sees_it(serve: ServerFactory, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    first = serve(chat=EchoChat(), settings=settings)
    async with httpx.AsyncClient(base_url=first.url) as client:
        await client.post("/api/chat", json={"message": "remember me", "sessionId": SID})
    first.stop()
    chat = EchoChat()
    second = serve(chat=chat, settings=settings)
    async with httpx.AsyncClient(base_url=second.url) as client:
        messages = (await client.get("/api/history", params={"sessionId": SID})).json()["messages"]
        assert [m["content"] for m in messages] == ["remember me", "You said: remember me"]
        await client.post("/api/chat", json={"message": "and now?", "sessionId": SID})
    assert [m.content for m in chat.requests[0].messages[1:]] == [
        "remember me",
        "You said: remember me",
        "and now?",
    ]


async def test_a_reply_cut_off_by_a_crash_is_marked_failed_at_start(
    serve: ServerFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "data")
    # this node before its crash (PARLEY_NODE_ID unset: the host name)
    store = SQLiteStore(settings.data_dir / "parley.db", node=settings.resolved_node_id)
    await store.open()
    key = session_key(LOCAL_USER.id, SID)  # what the API's SID is stored as (PARLEY_AUTH=none)
    await store.add_message(key, "turn_x", "user", "hello?")
    await store.add_message(key, "turn_x", "assistant", "", MessageStatus.PENDING)
    await store.aclose()
    server = serve(chat=EchoChat(), settings=settings)
    async with httpx.AsyncClient(base_url=server.url) as client:
        messages = (await client.get("/api/history", params={"sessionId": SID})).json()["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "failed")]
    assert "stopped" in messages[1]["error"]


async def test_the_user_message_is_stored_before_the_model_answers(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    bus = LocalBus()
    registry = SessionRegistry(store=store, chat=EchoChat(first_token_delay=0.3), bus=bus, config=CONFIG)
    turn = registry.get(SID).submit("stored first?")
    # turn_started comes after the user message is stored, and before any chunk.
    await until_event(turn.watch(), "turn_started")
    assert turn.parts == []
    assert [m.content for m in await store.list_messages(SID)] == ["stored first?"]
    reply = await turn.done
    assert reply.content == "You said: stored first?"
    await registry.aclose()
    await store.aclose()


async def test_a_full_queue_answers_busy_and_changes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    registry = SessionRegistry(
        store=store, chat=EchoChat(first_token_delay=0.2), bus=LocalBus(), config=CONFIG
    )
    session = registry.get(SID)
    turns = [session.submit("t0")]
    await until_event(turns[0].watch(), "turn_started")  # t0 runs: the queue holds only waiting turns
    turns += [session.submit(f"t{i}") for i in range(1, 5)]
    with pytest.raises(Busy) as busy:
        session.submit("too many")
    assert busy.value.limit == 4 and busy.value.status == 429
    await asyncio.gather(*(t.done for t in turns))
    assert [m.content for m in await store.list_messages(SID)][::2] == [f"t{i}" for i in range(5)]
    await registry.aclose()
    await store.aclose()


async def test_idle_sessions_are_released_and_reload_from_storage(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    bus = LocalBus()
    now = [0.0]
    chat = EchoChat()
    registry = SessionRegistry(
        store=store, chat=chat, bus=bus, config=CONFIG, idle_seconds=60, clock=lambda: now[0]
    )
    await registry.get(SID).submit("before").done
    sub = bus.subscribe(SID)  # a connected socket keeps the session live
    now[0] = 1000.0
    assert await registry.release_idle() == 0
    bus.unsubscribe(sub)
    assert await registry.release_idle() == 1
    assert SID not in registry
    await registry.get(SID).submit("after").done
    assert [m.content for m in chat.requests[-1].messages[1:]] == ["before", "You said: before", "after"]
    await registry.aclose()
    await store.aclose()


async def test_shutdown_mid_turn_records_the_reply_as_cancelled(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    registry = SessionRegistry(store=store, chat=EchoChat(token_interval=0.1), bus=LocalBus(), config=CONFIG)
    turn = registry.get(SID).submit("a b c d e f g h")
    await until_event(turn.watch(), "chunk")  # the model is writing
    await registry.aclose()
    messages = await store.list_messages(SID)
    assert [(m.role, m.status) for m in messages] == [
        ("user", MessageStatus.COMPLETE),
        ("assistant", MessageStatus.CANCELLED),
    ]
    assert messages[1].content.startswith("You")
    await store.aclose()


async def test_a_barge_in_keeps_only_what_was_heard(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    bus = LocalBus()
    sub = bus.subscribe(SID)
    registry = SessionRegistry(store=store, chat=EchoChat(token_interval=0.05), bus=bus, config=CONFIG)
    session = registry.get(SID)
    # while the model still writes
    running = session.submit("one two three four five six seven eight", source="voice")
    await until_event(running.watch(), "chunk", count=2)
    await session.interrupt(running, "You said:")
    with pytest.raises(TurnCancelled):
        await running.done
    # after the model finished, while the audio still plays
    done = session.submit("short", source="voice")
    await done.done
    await session.interrupt(done, "You")
    messages = await store.list_messages(SID)
    assert [(m.content, m.status) for m in messages[1::2]] == [
        ("You said:", MessageStatus.INTERRUPTED),
        ("You", MessageStatus.INTERRUPTED),
    ]
    kinds = []
    while not sub._queue.empty():
        kinds.append(json.loads(await sub.get())["type"])
    assert kinds.count("interrupted") == 2
    # the model's next context holds what was heard, not what was written
    chat = EchoChat()
    registry2 = SessionRegistry(store=store, chat=chat, bus=bus, config=CONFIG)
    await registry2.get(SID).submit("next").done
    assert [m.content for m in chat.requests[0].messages[1:5]] == [
        "one two three four five six seven eight",
        "You said:",
        "short",
        "You",
    ]
    await registry.aclose()
    await registry2.aclose()
    await store.aclose()
