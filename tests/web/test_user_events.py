"""The user's channel over real uvicorn and WebSocket clients: every socket of a user hears of the
user's conversations being created, renamed, updated and deleted, whatever conversation it is on;
another user's sockets hear nothing of them; the session's own events and resume are unchanged.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from parley.bus.memory import LocalBus
from parley.providers.testing import EchoChat
from parley.sessions.announce import ANNOUNCING_MAX
from parley.sessions.events import user_topic
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.standins.server import BackgroundServer
from parley.store.sqlite import SQLiteStore
from tests.auth.test_token_mode import TOKEN_SETTINGS, add_user, bearer
from tests.conftest import ServerFactory, make_settings


@pytest.fixture
def token_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: ServerFactory) -> BackgroundServer:
    data = tmp_path / "data"
    monkeypatch.setenv("PARLEY_DATA_DIR", str(data))  # `parley users add` finds the server's database
    monkeypatch.delenv("PARLEY_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return serve(chat=EchoChat(), settings=make_settings(data, **TOKEN_SETTINGS))


def ws_url(server: BackgroundServer, sid: str, after: str | None = None) -> str:
    url = server.url.replace("http://", "ws://") + f"/ws?sessionId={sid}"
    return url + (f"&after={after}" if after else "")


async def next_event(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next event of `kind` (others are skipped)."""
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] == kind:
            return event


async def deleted(ws: ClientConnection) -> str:
    """The id of the next `deleted` conversation; a delete clears first, which may be told before."""
    while (event := await next_event(ws, "conversations"))["action"] != "deleted":
        assert (event["action"], event["session"]["messageCount"]) == ("updated", 0)
    assert list(event) == ["type", "action", "session"] and list(event["session"]) == ["sessionId"]
    return str(event["session"]["sessionId"])


async def listed(client: httpx.AsyncClient, sid: str, headers: dict[str, str]) -> dict[str, Any]:
    r = await client.get("/api/sessions", headers=headers)
    assert r.status_code == 200, r.text
    (found,) = [s for s in r.json()["sessions"] if s["sessionId"] == sid]
    return found  # type: ignore[no-any-return]


async def test_every_socket_of_the_user_hears_of_its_conversations_and_no_one_else(
    token_server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = bearer(add_user(capsys, "alice")), bearer(add_user(capsys, "bob"))
    async with (
        httpx.AsyncClient(base_url=token_server.url) as client,
        websockets.connect(ws_url(token_server, "one"), additional_headers=alice) as a1,
        websockets.connect(ws_url(token_server, "two"), additional_headers=alice) as a2,
        # the same conversation id as alice's first socket: ids are scoped per user
        websockets.connect(ws_url(token_server, "one"), additional_headers=bob) as b,
    ):
        for ws in (a1, a2, b):
            await next_event(ws, "connected")

        r = await client.post("/api/sessions", json={"title": "Taxes"}, headers=alice)
        assert r.status_code == 201, r.text
        made = r.json()
        for ws in (a1, a2):
            event = await next_event(ws, "conversations")
            assert event == {"type": "conversations", "action": "created", "session": made}

        sid = made["sessionId"]
        r = await client.patch(f"/api/sessions/{sid}", json={"title": "Taxes 2026"}, headers=alice)
        assert r.status_code == 200, r.text
        for ws in (a1, a2):
            event = await next_event(ws, "conversations")
            assert (event["action"], event["session"]) == ("renamed", r.json())
            assert "eventId" not in event  # not the session's: a resume never sees it

        # a first turn makes a conversation of its own: listed at once, retitled once it ends
        r = await client.post(
            "/api/chat", json={"sessionId": "fresh", "message": "Which plants like shade"}, headers=alice
        )
        assert r.status_code == 200, r.text
        for ws in (a1, a2):
            created = await next_event(ws, "conversations")
            assert created["action"] == "created"
            assert (created["session"]["sessionId"], created["session"]["title"]) == ("fresh", "")
            titled = await next_event(ws, "conversations")
            assert titled["action"] == "renamed"
            assert titled["session"] == await listed(client, "fresh", alice)
            assert (titled["session"]["title"], titled["session"]["messageCount"]) == (
                "Which plants like shade",
                2,
            )

        r = await client.post("/api/chat", json={"sessionId": "fresh", "message": "And ferns"}, headers=alice)
        assert r.status_code == 200, r.text
        for ws in (a1, a2):
            updated = await next_event(ws, "conversations")
            assert updated["action"] == "updated"
            assert updated["session"] == await listed(client, "fresh", alice)
            assert updated["session"]["messageCount"] == 4
            assert updated["session"]["updated_at"] >= titled["session"]["updated_at"]

        r = await client.delete(f"/api/sessions/{sid}", headers=alice)
        assert r.status_code == 200, r.text
        for ws in (a1, a2):
            assert await deleted(ws) == sid

        # bob's first event on his channel is his own: none of alice's came before it
        r = await client.post("/api/sessions", headers=bob)
        assert r.status_code == 201, r.text
        event = await next_event(b, "conversations")
        assert (event["action"], event["session"]) == ("created", r.json())
        # and alice's sockets hear nothing of bob's: their next event is alice's next change
        r = await client.post("/api/sessions", headers=alice)
        for ws in (a1, a2):
            assert (await next_event(ws, "conversations"))["session"] == r.json()


async def test_a_socket_on_a_deleted_conversation_closes_and_the_others_hear_it(
    serve: ServerFactory,
) -> None:
    server = serve(chat=EchoChat())
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        websockets.connect(ws_url(server, "doomed")) as doomed,
        websockets.connect(ws_url(server, "other")) as other,
    ):
        for ws in (doomed, other):
            await next_event(ws, "connected")
        r = await client.post("/api/chat", json={"sessionId": "doomed", "message": "hello"})
        assert r.status_code == 200, r.text
        assert (await next_event(other, "conversations"))["action"] == "created"
        assert (await next_event(other, "conversations"))["action"] == "renamed"
        assert (await client.delete("/api/sessions/doomed")).status_code == 200
        assert await deleted(other) == "doomed"
        await next_event(doomed, "deleted")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(doomed.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


async def test_a_clear_updates_the_list_and_a_resume_still_follows_the_session(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        websockets.connect(ws_url(server, "watched")) as watcher,
    ):
        await next_event(watcher, "connected")
        assert (await client.post("/api/chat", json={"sessionId": "s1", "message": "one"})).status_code == 200
        assert (await next_event(watcher, "conversations"))["action"] == "created"
        assert (await next_event(watcher, "conversations"))["action"] == "renamed"
        async with websockets.connect(ws_url(server, "s1")) as ws:
            await next_event(ws, "connected")
            assert (
                await client.post("/api/chat", json={"sessionId": "s1", "message": "two"})
            ).status_code == 200
            reply = await next_event(ws, "reply")
            # the user's events reached this socket too, with no id: the last id is the session's
            assert (await next_event(ws, "conversations"))["action"] == "updated"
        assert (await next_event(watcher, "conversations"))["session"]["messageCount"] == 4
        r = await client.post("/api/chat", json={"sessionId": "s1", "message": "three"})
        assert r.status_code == 200
        async with websockets.connect(ws_url(server, "s1", after=reply["eventId"])) as ws:
            assert (await next_event(ws, "connected"))["resumed"] is True
            missed = await next_event(ws, "user_message")
            assert missed["message"]["content"] == "three" and "eventId" in missed
        assert (await client.post("/api/clear", json={"sessionId": "s1"})).status_code == 200
        while (event := await next_event(watcher, "conversations"))["session"]["messageCount"] != 0:
            assert event["action"] == "updated"  # turn three's, then the clear's
        assert event["action"] == "updated" and event["session"]["title"] == "one"


async def test_the_users_channel_takes_one_subscription_per_socket(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    bus = server.app.state.services.bus
    async with websockets.connect(ws_url(server, "a")) as a, websockets.connect(ws_url(server, "b")) as b:
        for ws in (a, b):
            await next_event(ws, "connected")
        assert bus.subscriber_count(user_topic("local")) == 2


class HeldBus(LocalBus):
    """A LocalBus whose publishes on users' topics wait until released: Redis not answering."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def publish(self, topic: str, event: str, **options: Any) -> str:
        if topic.endswith("/"):
            await self.release.wait()
        return await super().publish(topic, event, **options)


async def test_announcements_waiting_on_a_bus_that_does_not_answer_are_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    bus = HeldBus()
    config = SessionConfig(system_prompt="sys", history_limit=20, max_tokens=64, max_queued_turns=4)
    registry = SessionRegistry(store=store, chat=EchoChat(), bus=bus, config=config)
    sub = bus.subscribe(user_topic("alice"))
    try:
        session = registry.get("alice/s1")
        for i in range(ANNOUNCING_MAX + 4):
            # every turn ends while its announcements wait
            assert (await session.submit(f"turn {i}").done).content == f"You said: turn {i}"
        assert "announcements wait" in caplog.text
        bus.release.set()
        told = [json.loads(await asyncio.wait_for(sub.get(), 10)) for _ in range(ANNOUNCING_MAX)]
        assert told[0]["action"] == "created"  # in order: the first turn's first
        assert all(e["action"] == "updated" for e in told[1:])  # no titler here
        assert sub.queued == 0  # the rest were dropped, not queued
        await session.submit("once more").done
        last = json.loads(await asyncio.wait_for(sub.get(), 10))
        assert (last["action"], last["session"]["messageCount"]) == ("updated", 2 * (ANNOUNCING_MAX + 5))
    finally:
        bus.unsubscribe(sub)
        await registry.aclose()
        await store.aclose()
