"""Edit and resend, and regenerate: a turn that replaces an earlier user message and all after it.

The replaced messages stay stored (status `replaced`) but leave history, the model's context,
conversation counts and search; the session's sockets hear a `replaced` event first.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import websockets

from parley.providers.testing import EchoChat
from tests.conftest import ServerFactory, make_settings

SID = "edits"


async def say(client: httpx.AsyncClient, text: str, **extra: object) -> httpx.Response:
    return await client.post("/api/chat", json={"message": text, "sessionId": SID, **extra})


async def history(client: httpx.AsyncClient) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = (await client.get("/api/history", params={"sessionId": SID})).json()[
        "messages"
    ]
    return messages


async def test_an_edit_replaces_its_message_and_everything_after_it(
    serve: ServerFactory, tmp_path: Path
) -> None:
    chat = EchoChat()
    data = tmp_path / "d"
    server = serve(chat=chat, settings=make_settings(data))
    async with httpx.AsyncClient(base_url=server.url) as client:
        for text in ("first", "second", "third"):
            assert (await say(client, text)).status_code == 200
        second = next(m for m in await history(client) if m["content"] == "second")
        async with websockets.connect(server.url.replace("http", "ws") + f"/ws?sessionId={SID}") as ws:
            assert json.loads(await ws.recv())["type"] == "connected"
            r = await say(client, "second, edited", editOf=second["id"])
            assert r.status_code == 200 and r.json()["response"] == "You said: second, edited"
            kinds = []
            while not kinds or kinds[-1]["type"] != "reply":
                kinds.append(json.loads(await ws.recv()))
        assert kinds[0].pop("eventId")
        assert kinds[0] == {
            "type": "replaced",
            "sessionId": SID,
            "turnId": r.json()["turnId"],
            "fromMessageId": second["id"],
        }
        assert kinds[1]["type"] == "user_message"
        assert [m["content"] for m in await history(client)] == [
            "first",
            "You said: first",
            "second, edited",
            "You said: second, edited",
        ]
        # the model saw the conversation as it was before the edited message
        assert [m.content for m in chat.requests[-1].messages[1:]] == [
            "first",
            "You said: first",
            "second, edited",
        ]
        # the next turn's context has no trace of the replaced branch either
        await say(client, "fourth")
        assert "third" not in [m.content for m in chat.requests[-1].messages]
        listed = (await client.get("/api/sessions")).json()["sessions"]
        assert next(c for c in listed if c["sessionId"] == SID)["messageCount"] == 6
        found = (await client.get("/api/search", params={"q": "third"})).json()["results"]
        assert found == []
    # stored as such: the replaced branch is still in the database, marked
    with sqlite3.connect(data / "parley.db") as db:
        rows = db.execute("SELECT content, status FROM messages ORDER BY id").fetchall()
    assert [c for c, s in rows if s == "replaced"] == [
        "second",
        "You said: second",
        "third",
        "You said: third",
    ]


async def test_regenerate_is_the_same_message_resent_over_it(serve: ServerFactory) -> None:
    chat = EchoChat()
    server = serve(chat=chat)
    async with httpx.AsyncClient(base_url=server.url) as client:
        await say(client, "tell me")
        asked = (await history(client))[0]
        again = await say(client, "tell me", editOf=asked["id"])
        assert again.status_code == 200
        shown = await history(client)
    assert [(m["role"], m["content"]) for m in shown] == [
        ("user", "tell me"),
        ("assistant", "You said: tell me"),
    ]
    assert shown[0]["id"] != asked["id"]  # a new turn, the old pair replaced
    assert len(chat.requests) == 2 and [m.content for m in chat.requests[-1].messages[1:]] == ["tell me"]


async def test_an_edit_of_what_is_not_your_message_here_is_refused_and_changes_nothing(
    serve: ServerFactory,
) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        await say(client, "mine")
        before = await history(client)
        reply_id = before[1]["id"]
        other = await client.post("/api/chat", json={"message": "elsewhere", "sessionId": "other"})
        assert other.status_code == 200
        for bad in (reply_id, 10_000, 0, "1", True):
            r = await say(client, "edited", editOf=bad)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["field"] == "editOf" and "editOf" in r.json()["error"]
        # a user message of another conversation is not this one's
        elsewhere = (await client.get("/api/history", params={"sessionId": "other"})).json()["messages"][0]
        assert (await say(client, "edited", editOf=elsewhere["id"])).status_code == 400
        assert await history(client) == before
        async with websockets.connect(server.url.replace("http", "ws") + f"/ws?sessionId={SID}") as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "chat", "message": "x", "editOf": reply_id, "clientId": "c"}))
            error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["clientId"] == "c" and error["error"]["field"] == "editOf"
        assert await history(client) == before
