"""The output gate: the model call leaves at once, the turn's events wait for its writes.

A turn's user message and pending reply are stored while the model is already called; no event
of the turn reaches a client before they are committed, and a failed write ends the model call.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.bus.memory import LocalBus
from parley.errors import ParleyError
from parley.providers.llm import ChatDelta, ChatProvider, ChatRequest
from parley.providers.openai import OpenAIChat, OpenAIClient
from parley.providers.testing import EchoChat
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.standins.openai import create_app
from parley.standins.server import BackgroundServer
from tests.providers.conftest import wait_until
from tests.sessions.test_turn_endings import WatchedStore, drain, next_loop_step

CONFIG = SessionConfig(system_prompt="sys", history_limit=20, max_tokens=64, max_queued_turns=4)


class SignallingChat(ChatProvider):
    """Another provider's stream, telling the test when its first text came and when it closed."""

    name = "signalling"
    model = "signalling"

    def __init__(self, inner: ChatProvider) -> None:
        self.inner = inner
        self.answered = asyncio.Event()
        self.closed = asyncio.Event()

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        try:
            async for delta in self.inner.stream(request):
                if delta.text:
                    self.answered.set()
                yield delta
        finally:
            self.closed.set()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[WatchedStore]:
    the_store = WatchedStore(tmp_path / "p.db")
    await the_store.open()
    yield the_store
    await the_store.aclose()


async def test_the_model_answers_while_the_writes_wait_and_no_event_leaves_before_them(
    store: WatchedStore,
) -> None:
    bus = LocalBus()
    sub = bus.subscribe("s")
    chat = SignallingChat(EchoChat())
    registry = SessionRegistry(store=store, chat=chat, bus=bus, config=CONFIG)
    store.gate = asyncio.Event()
    turn = registry.get("s").submit("hello", client_id="c1")
    feed = turn.watch()
    await store.at_gate.wait()
    # EchoChat answers within a few steps of the loop: unless the model waited for the writes
    for _ in range(50):
        if chat.answered.is_set():
            break
        await next_loop_step()
    assert chat.answered.is_set(), "the model was not called while the turn's writes were held"
    assert feed.empty() and sub._queue.empty()  # not a single event before the commit
    assert turn.parts == [] and turn.message_id is None
    assert await store.list_messages("s") == []

    store.gate.set()
    first = await feed.get()
    assert first is not None and first.type == "user_message"
    # released only once committed: what it announces is already in storage
    stored = await store.list_messages("s")
    assert [(m.role, m.content) for m in stored] == [("user", "hello")]
    rest = await drain(feed)
    kinds = [e["type"] for e in rest]
    assert kinds[0] == "turn_started" and kinds[-1] == "reply"
    assert set(kinds[1:-1]) == {"chunk"}
    assert "".join(str(e["text"]) for e in rest[1:-1]) == "You said: hello"
    reply = await turn.done
    assert reply.content == "You said: hello"
    assert [json.loads(await sub.get())["type"] for _ in range(len(kinds) + 1)] == ["user_message", *kinds]
    await registry.aclose()


async def test_a_failed_write_cancels_the_upstream_call_and_fails_the_turn(store: WatchedStore) -> None:
    # The stand-in writes its first token at once, then waits a minute: the stream stays open.
    app = create_app(token_interval=60.0)
    with BackgroundServer(app) as upstream:
        chat = SignallingChat(OpenAIChat(OpenAIClient(base_url=upstream.url + "/v1")))
        bus = LocalBus()
        sub = bus.subscribe("s")
        registry = SessionRegistry(store=store, chat=chat, bus=bus, config=CONFIG)
        store.gate = asyncio.Event()
        store.fail = sqlite3.OperationalError("disk I/O error")
        turn = registry.get("s").submit("hello", client_id="c1")
        feed = turn.watch()
        await chat.answered.wait()  # the upstream is streaming while the writes are held
        assert len(app.state.requests) == 1 and feed.empty()

        store.gate.set()
        with pytest.raises(ParleyError, match="could not be stored"):
            await turn.done
        (event,) = await drain(feed)  # no user_message, no chunk: only how the turn ended
        assert event["type"] == "error" and event["turnId"] == turn.id and event["clientId"] == "c1"
        assert event["error"]["status"] == 500  # type: ignore[index]
        assert json.loads(await sub.get()) == event and sub._queue.empty()
        assert chat.closed.is_set()  # Parley closed the upstream stream...
        # ...and the stand-in saw its client go mid-stream (its state lives in the server's thread)
        assert await wait_until(lambda: app.state.cancelled_streams == 1)
        assert app.state.completed_streams == 0
        assert await store.list_messages("s") == []
        assert store.at_gate.is_set()

        # the session goes on: the next turn is stored and answered
        store.gate, store.fail = None, None
        app.state.requests.clear()
        await registry.aclose()
        await chat.aclose()
