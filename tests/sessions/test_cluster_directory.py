"""ClusterDirectory in one process: two "nodes", each with its own store connection, Redis bus,
registry and directory, on one SQLite file and a real Redis (a key prefix of their own).

What the multi-process tests (tests/cluster) cannot pin down deterministically is tested here:
a node cut off past its lease cannot write, hand-over of turns and stops, orphaned replies.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from parley.bus.redis import RedisBus
from parley.errors import Busy, Fenced, ParleyError, TurnCancelled
from parley.providers.llm import ChatDelta, ChatProvider, ChatRequest
from parley.sessions.cluster import ClusterDirectory
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.sessions.turn import Turn
from parley.store.base import MessageStatus
from parley.store.sqlite import SQLiteStore
from tests.bus.conftest import REDIS_HOST, REDIS_PORT, REDIS_URL
from tests.conftest import require_service

KEY = "alice/s1"


class HeldChat(ChatProvider):
    """Echoes; a message with `#hold` writes its first word, then waits until released."""

    name = "held"
    model = "held"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.calls = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        self.calls += 1
        text = request.messages[-1].content
        yield ChatDelta("You")
        if "#hold" in text:
            self.holding.set()
            await self.release.wait()
        yield ChatDelta(f" said: {text}")


@dataclass
class Node:
    store: SQLiteStore
    bus: RedisBus
    chat: HeldChat
    registry: SessionRegistry
    directory: ClusterDirectory

    async def live(self, key: str = KEY):  # type: ignore[no-untyped-def]
        return self.registry.get(key)

    async def submit(self, text: str, key: str = KEY) -> Turn:
        return await self.directory.submit(key, text, live=lambda: self.live(key))


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, str]]:
    require_service(REDIS_HOST, REDIS_PORT, "Redis, for the session directory")
    prefix = f"parley-test:{uuid.uuid4().hex}:"
    async with AsyncExitStack() as stack:
        made = []
        for name in ("a", "b"):
            store = SQLiteStore(tmp_path / "parley.db", node=f"node-{name}")
            await store.open()
            stack.push_async_callback(store.aclose)
            bus = RedisBus.from_url(REDIS_URL, prefix=f"{prefix}bus:")
            stack.push_async_callback(bus.aclose)
            chat = HeldChat()
            # partial replies never stored mid-turn: what a take-over keeps does not depend on timing
            config = SessionConfig(
                system_prompt="",
                history_limit=20,
                max_tokens=64,
                max_queued_turns=8,
                partial_save_seconds=1e9,
            )
            registry = SessionRegistry(store=store, chat=chat, bus=bus, config=config)
            directory = ClusterDirectory.from_url(
                registry,
                REDIS_URL,
                bus=bus,
                store=store,
                instance=f"node-{name}",
                prefix=prefix,
                # renewed every 20 s: never during a test, which calls the renewal itself
                lease_seconds=60,
            )
            stack.push_async_callback(directory.aclose)
            directory.start()
            stack.push_async_callback(registry.aclose)
            made.append(Node(store, bus, chat, registry, directory))
        yield made[0], made[1], prefix
        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_turn_sent_to_another_node_runs_on_the_owner_and_streams_back(
    nodes: tuple[Node, Node, str],
) -> None:
    a, b, _ = nodes
    first = await a.submit("one")  # a takes the session
    assert (await first.done).content == "You said: one"
    turn = await b.submit("two")
    feed = turn.watch()
    reply = await turn.done
    assert (reply.content, reply.status) == ("You said: two", MessageStatus.COMPLETE)
    kinds = []
    while (event := await feed.get()) is not None:
        kinds.append(event.type)
    assert kinds[0] == "user_message" and kinds[-1] == "reply" and "chunk" in kinds
    # its events come from the bus, maybe before anyone watches: a late watcher gets them all
    late = turn.watch()
    again = []
    while (event := await late.get()) is not None:
        again.append(event.type)
    assert again == kinds
    assert (a.chat.calls, b.chat.calls) == (2, 0)  # both ran on the owner
    assert KEY in a.registry and KEY not in b.registry
    stored = await b.store.list_messages(KEY)
    assert [m.content for m in stored] == ["one", "You said: one", "two", "You said: two"]


async def test_a_stop_sent_to_another_node_stops_the_turn_where_it_runs(
    nodes: tuple[Node, Node, str],
) -> None:
    a, b, _ = nodes
    turn = await a.submit("a long one #hold")
    await a.chat.holding.wait()
    assert await b.directory.stop(KEY) == turn.id
    with pytest.raises(TurnCancelled):
        await turn.done
    assert turn.reply is not None and turn.reply.status is MessageStatus.CANCELLED
    assert await b.directory.stop(KEY) is None  # nothing runs now


async def test_a_node_cut_off_past_its_lease_cannot_write_the_session_again(
    nodes: tuple[Node, Node, str],
) -> None:
    a, b, prefix = nodes
    held = await a.submit("a long one #hold")
    await a.chat.holding.wait()
    # a is paused (or cut off from Redis) past its lease: the lease is gone, b takes the session
    admin = Redis.from_url(REDIS_URL, decode_responses=True)
    await admin.delete(f"{prefix}lease:{KEY}")
    await admin.aclose()
    after = await b.submit("b's turn")
    assert (await after.done).content == "You said: b's turn"
    watcher = await b.bus.join(KEY)  # a socket on b, from after the take-over
    # the take failed a's pending reply; a's late writes are refused, so nothing of it changes
    with pytest.raises(Fenced):
        await a.store.finish_message(held.message_id or 0, "late", MessageStatus.COMPLETE, fence=1)
    a.chat.release.set()
    with pytest.raises(Fenced):  # its final write was refused: the turn fails, nothing stored
        await held.done
    # nor did a's late chunks reach b's socket: its events were refused like its writes
    await b.bus.publish(KEY, json.dumps({"type": "marker"}))
    seen = []
    while (event := json.loads(await watcher.get()))["type"] != "marker":
        seen.append(event)
    assert [e for e in seen if e.get("turnId") == held.id] == []
    b.bus.unsubscribe(watcher)
    stored = await b.store.list_messages(KEY)
    assert [(m.role, m.status, m.content) for m in stored] == [
        ("user", MessageStatus.COMPLETE, "a long one #hold"),
        ("assistant", MessageStatus.FAILED, ""),
        ("user", MessageStatus.COMPLETE, "b's turn"),
        ("assistant", MessageStatus.COMPLETE, "You said: b's turn"),
    ]


async def test_an_orphaned_pending_reply_is_failed_and_its_sockets_told(
    nodes: tuple[Node, Node, str],
) -> None:
    a, b, _ = nodes
    # a node that died mid-reply left this, and holds no lease any more
    _, pending = await a.store.begin_turn(KEY, "turn_dead", "hello")
    await a.store.save_partial(pending.id, "half an ans")
    socket = await b.bus.join(KEY)
    await b.directory._take_orphans()
    event = json.loads(await socket.get())
    assert (event["type"], event["turnId"], event["message"]["status"]) == ("error", "turn_dead", "failed")
    stored = await a.store.list_messages(KEY)
    assert [(m.status, m.content) for m in stored][-1] == (MessageStatus.FAILED, "half an ans")
    assert await a.store.pending_sessions() == []


async def test_closing_a_node_releases_its_leases_so_another_takes_the_session_at_once(
    nodes: tuple[Node, Node, str],
) -> None:
    a, b, prefix = nodes
    assert (await (await a.submit("one")).done).content == "You said: one"
    admin = Redis.from_url(REDIS_URL, decode_responses=True)
    assert await admin.get(f"{prefix}lease:{KEY}") == "node-a"
    await a.registry.aclose()
    await a.directory.aclose()
    assert await admin.get(f"{prefix}lease:{KEY}") is None
    await admin.aclose()
    assert (await (await b.submit("two")).done).content == "You said: two"
    assert b.chat.calls == 1


async def test_a_released_session_gives_up_its_lease_and_a_live_one_renews_it(
    nodes: tuple[Node, Node, str],
) -> None:
    a, _, prefix = nodes
    assert (await (await a.submit("one")).done).content == "You said: one"
    admin = Redis.from_url(REDIS_URL, decode_responses=True)
    lease = f"{prefix}lease:{KEY}"
    await admin.pexpire(lease, 200)
    await a.directory._renew_all()
    assert await admin.pttl(lease) > 200  # renewed to the full lease
    await a.registry.drop(KEY)  # idled out
    await a.directory._renew_all()
    assert await admin.get(lease) is None
    await admin.aclose()


async def test_a_call_on_another_node_takes_the_session_once_the_owners_turn_is_done(
    nodes: tuple[Node, Node, str],
) -> None:
    a, b, prefix = nodes
    held = await a.submit("a long one #hold")
    await a.chat.holding.wait()
    moving = asyncio.create_task(b.directory.own(KEY))  # a voice call starts on b
    a.chat.release.set()  # a's turn is not cut short: the hand-over waits for it to end
    assert (await held.done).content == "You said: a long one #hold"
    await moving
    b.directory.pin(KEY)
    admin = Redis.from_url(REDIS_URL, decode_responses=True)
    assert await admin.get(f"{prefix}lease:{KEY}") == "node-b"
    await admin.aclose()
    assert KEY not in a.registry
    # from now on the call's node runs the session's turns, wherever they come in
    assert (await (await a.submit("typed meanwhile")).done).content == "You said: typed meanwhile"
    assert (a.chat.calls, b.chat.calls) == (1, 1)
    # and while the call lasts, no other node's call can take it
    with pytest.raises(Busy):
        await a.directory.own(KEY)
    b.directory.unpin(KEY)


async def test_a_session_made_live_on_a_node_that_does_not_own_it_cannot_write(
    nodes: tuple[Node, Node, str],
) -> None:
    a, b, _ = nodes
    assert (await (await a.submit("one")).done).content == "You said: one"
    # b makes the session live around its directory (as a path that forgot it would): its turn
    # is refused by the store, and nothing is written
    stray = b.registry.get(KEY).submit("written around the directory")
    with pytest.raises(ParleyError):
        await stray.done
    assert [m.content for m in await a.store.list_messages(KEY)] == ["one", "You said: one"]
