"""A bus that does not answer (Redis gone) must not end a turn: it is stored and its sender hears it."""

from __future__ import annotations

from pathlib import Path

from parley.bus.redis import RedisBus
from parley.providers.testing import EchoChat
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.store.base import MessageStatus
from parley.store.sqlite import SQLiteStore

NOTHING_LISTENS = "redis://127.0.0.1:9/0"


async def test_a_turn_is_stored_and_heard_by_its_sender_while_the_bus_is_down(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "parley.db")
    await store.open()
    bus = RedisBus.from_url(NOTHING_LISTENS)
    config = SessionConfig(system_prompt="", history_limit=20, max_tokens=64, max_queued_turns=8)
    registry = SessionRegistry(store=store, chat=EchoChat(), bus=bus, config=config)
    try:
        turn = registry.get("alice/s1").submit("hello")
        feed = turn.watch()
        reply = await turn.done
        kinds = []
        while (event := await feed.get()) is not None:
            kinds.append(event.type)
        assert (reply.content, reply.status) == ("You said: hello", MessageStatus.COMPLETE)
        assert kinds[0] == "user_message" and kinds[-1] == "reply"
        stored = await store.list_messages("alice/s1")
        assert [(m.role, m.content) for m in stored] == [("user", "hello"), ("assistant", "You said: hello")]
        assert registry.get("alice/s1").catch_up_mark() is None
    finally:
        await registry.aclose()
        await bus.aclose()
        await store.aclose()
