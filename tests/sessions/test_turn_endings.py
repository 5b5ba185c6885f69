"""Every turn ends, and says how: idle release racing a new turn, shutdown, crashes mid-reply."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.bus.memory import LocalBus
from parley.errors import TurnCancelled
from parley.providers.llm import ChatDelta, ChatProvider, ChatRequest
from parley.providers.testing import EchoChat
from parley.sessions.events import Event
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.store.base import Message, MessageStatus
from parley.store.sqlite import SQLiteStore
from tests.sessions.test_turns import until_event

CONFIG = SessionConfig(system_prompt="sys", history_limit=20, max_tokens=64, max_queued_turns=4)


class ManualClock:
    """The registry's clock and its timers: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        timer = asyncio.get_running_loop().create_future()
        self._timers.append((self.now + seconds, timer))
        await timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for due, timer in self._timers:
            if due <= self.now and not timer.done():
                timer.set_result(None)
        self._timers = [(due, timer) for due, timer in self._timers if not timer.done()]


class WatchedStore(SQLiteStore):
    """SQLite, with a gate in front of a turn's writes and a signal after each partial save."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate: asyncio.Event | None = None  # when set to an Event, a turn's writes wait for it
        self.at_gate = asyncio.Event()
        self.fail: Exception | None = None  # raised by a turn's writes (after the gate) when set
        self.partial_saves: list[str] = []
        self.partial_saved = asyncio.Event()

    async def begin_turn(
        self,
        session_id: str,
        turn_id: str,
        user_text: str,
        *,
        replace_from: int | None = None,
        fence: int | None = None,
    ) -> tuple[Message, Message]:
        if self.gate is not None:
            self.at_gate.set()
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return await super().begin_turn(
            session_id, turn_id, user_text, replace_from=replace_from, fence=fence
        )

    async def save_partial(self, message_id: int, content: str, *, fence: int | None = None) -> None:
        await super().save_partial(message_id, content, fence=fence)
        self.partial_saves.append(content)
        self.partial_saved.set()


class StallingChat(ChatProvider):
    """Writes the given pieces, then hangs (a stalled upstream) until the turn is cancelled."""

    name = "stalling"
    model = "stalling"

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        for piece in self.pieces:
            yield ChatDelta(piece)
        await asyncio.Event().wait()


async def next_loop_step() -> None:
    """Let every task that is ready run up to its next await, as other requests do meanwhile."""
    loop = asyncio.get_running_loop()
    step = loop.create_future()
    loop.call_soon(step.set_result, None)
    await step


async def drain(feed: asyncio.Queue[Event | None]) -> list[dict[str, object]]:
    """A finished turn's feed, up to its end."""
    seen = []
    while (event := await feed.get()) is not None:
        seen.append(json.loads(event.data))
    return seen


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[WatchedStore]:
    the_store = WatchedStore(tmp_path / "p.db")
    await the_store.open()
    yield the_store
    await the_store.aclose()


async def test_a_turn_sent_while_idle_sessions_are_released_is_answered(store: WatchedStore) -> None:
    clock = ManualClock()
    registry = SessionRegistry(
        store=store, chat=EchoChat(), bus=LocalBus(), config=CONFIG, idle_seconds=1, clock=clock
    )
    for sid in ("first", "second"):
        await registry.get(sid).submit("hello").done
    clock.advance(5)
    release = asyncio.create_task(registry.release_idle())
    await next_loop_step()  # the release has judged both idle and is closing them
    turn = registry.get("second").submit("are you there?")
    assert await release == 2
    reply = await turn.done
    assert reply.content == "You said: are you there?"
    stored = await store.list_messages("second")
    assert [(m.content, m.status) for m in stored[2:]] == [
        ("are you there?", MessageStatus.COMPLETE),
        ("You said: are you there?", MessageStatus.COMPLETE),
    ]
    await registry.aclose()


async def test_a_turn_cancelled_while_its_message_is_stored_still_ends(store: WatchedStore) -> None:
    bus = LocalBus()
    sub = bus.subscribe("s")
    registry = SessionRegistry(store=store, chat=EchoChat(), bus=bus, config=CONFIG)
    store.gate = asyncio.Event()
    turn = registry.get("s").submit("hello", client_id="c1")
    feed = turn.watch()
    await store.at_gate.wait()  # the worker is inside the turn's writes
    await registry.aclose()
    assert turn.done.done()
    with pytest.raises(TurnCancelled):
        await turn.done
    (event,) = await drain(feed)
    assert event["type"] == "error" and event["turnId"] == turn.id and event["clientId"] == "c1"
    assert event["error"]["code"] == "cancelled"  # type: ignore[index]
    assert json.loads(await sub.get()) == event


async def test_a_queued_turn_at_shutdown_is_told_the_server_stopped(store: WatchedStore) -> None:
    bus = LocalBus()
    sub = bus.subscribe("s")
    registry = SessionRegistry(store=store, chat=StallingChat(["Once"]), bus=bus, config=CONFIG)
    session = registry.get("s")
    running = session.submit("tell me a story")
    await until_event(running.watch(), "chunk")
    queued = session.submit("and another", client_id="c2")
    feed = queued.watch()
    await registry.aclose()
    with pytest.raises(TurnCancelled, match="the server stopped before this turn ran"):
        await queued.done
    (event,) = await drain(feed)
    assert event["type"] == "error" and event["turnId"] == queued.id and event["clientId"] == "c2"
    assert event["error"]["error"] == "the server stopped before this turn ran"  # type: ignore[index]
    published = []
    while not sub._queue.empty():
        published.append(json.loads(await sub.get()))
    assert published[-1] == event
    assert [m.content for m in await store.list_messages("s")] == ["tell me a story", "Once"]


async def test_a_crash_mid_reply_keeps_the_text_already_streamed(store: WatchedStore, tmp_path: Path) -> None:
    clock = ManualClock()
    pieces = ["It", " was", " a", " dark"]
    registry = SessionRegistry(
        store=store, chat=StallingChat(pieces), bus=LocalBus(), config=CONFIG, clock=clock, sleep=clock.sleep
    )
    turn = registry.get("s").submit("a story")
    await until_event(turn.watch(), "chunk", count=len(pieces))  # then the model stalls
    assert store.partial_saves == []  # not a write per chunk: none before the clock moves on
    clock.advance(1.0)
    await store.partial_saved.wait()
    assert store.partial_saves == ["It was a dark"]
    # kill -9 now: the next start, on the same file, marks the reply failed and keeps its text
    restarted = SQLiteStore(tmp_path / "p.db")
    await restarted.open()
    assert await restarted.fail_pending("the server stopped while this reply was written") == 1
    reply = (await restarted.list_messages("s"))[-1]
    assert (reply.content, reply.status) == ("It was a dark", MessageStatus.FAILED)
    await restarted.aclose()
    await registry.aclose()
