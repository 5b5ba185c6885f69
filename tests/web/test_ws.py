"""The session WebSocket with real clients: live fan-out, commands, and bad frames."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from parley.providers.testing import EchoChat
from tests.conftest import ServerFactory, make_settings

SID = "session-ws"


def ws_url(base: str, sid: str | None = SID) -> str:
    url = base.replace("http://", "ws://") + "/ws"
    return url + (f"?sessionId={sid}" if sid is not None else "")


async def recv(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return data


async def until(ws: Any, kind: str, timeout: float = 5.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read events until one of `kind`; returns it and everything read before it."""
    seen = []
    while True:
        event = await recv(ws, timeout)
        if event["type"] == kind:
            return event, seen
        seen.append(event)


async def test_two_sockets_both_see_a_turn_sent_over_http_live(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat(token_interval=0.02))
    async with websockets.connect(ws_url(server.url)) as a, websockets.connect(ws_url(server.url)) as b:
        for ws in (a, b):
            hello = await recv(ws)
            assert hello["type"] == "connected" and hello["sessionId"] == SID
        async with httpx.AsyncClient(base_url=server.url) as client:
            sending = asyncio.create_task(
                client.post("/api/chat", json={"message": "hello both", "sessionId": SID})
            )
            results = []
            for ws in (a, b):
                reply, before = await until(ws, "reply")
                results.append((reply, before))
            response = (await sending).json()
    for reply, before in results:
        kinds = [e["type"] for e in before]
        assert kinds[:2] == ["user_message", "turn_started"]
        assert before[0]["message"]["content"] == "hello both"
        chunks = [e["text"] for e in before if e["type"] == "chunk"]
        assert len(chunks) == 4
        assert "".join(chunks) == reply["response"] == response["response"] == "You said: hello both"
        assert reply["turnId"] == response["turnId"]


async def test_sockets_of_other_sessions_see_nothing(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with websockets.connect(ws_url(server.url, "someone-else")) as other:
        await recv(other)
        async with httpx.AsyncClient(base_url=server.url) as client:
            await client.post("/api/chat", json={"message": "private", "sessionId": SID})
        await other.send(json.dumps({"type": "ping"}))
        # the next event is our pong, nothing of the session leaked (the user's list events reach
        # every socket of the user, whatever conversation it is on)
        while (event := await recv(other))["type"] == "conversations":
            assert event["session"]["sessionId"] == SID
        assert event["type"] == "pong"


async def test_chat_and_stop_over_the_socket(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat(token_interval=0.1))
    async with websockets.connect(ws_url(server.url)) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "chat", "message": "a b c d e f g h i j k l m n o p"}))
        started, _ = await until(ws, "turn_started")
        await until(ws, "chunk")
        await ws.send(json.dumps({"type": "stop", "turnId": started["turnId"]}))
        cancelled, _ = await until(ws, "cancelled")
        assert cancelled["turnId"] == started["turnId"]
        assert cancelled["message"]["status"] == "cancelled"
        await ws.send(json.dumps({"type": "chat", "message": "next"}))
        reply, _ = await until(ws, "reply")
        assert reply["response"] == "You said: next"


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ("not json", "frame"),
        ("[1, 2]", "type"),
        ('{"type": "launch_missiles"}', "type"),
        ('{"no_type": true}', "type"),
        ('{"type": "chat"}', "message"),
        ('{"type": "chat", "message": "   "}', "message"),
        ('{"type": "stop", "turnId": 5}', "turnId"),
    ],
)
async def test_bad_frames_get_an_error_event_and_the_socket_stays(
    serve: ServerFactory, frame: str, field: str
) -> None:
    server = serve(chat=EchoChat())
    async with websockets.connect(ws_url(server.url)) as ws:
        await recv(ws)
        await ws.send(frame)
        event = await recv(ws)
        assert event["type"] == "error"
        assert event["error"]["field"] == field
        assert event["error"]["status"] == 400
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv(ws))["type"] == "pong"
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.get("/api/history", params={"sessionId": SID})
        assert r.json()["messages"] == []


async def test_oversized_frame_is_refused_and_closes_only_that_socket(
    serve: ServerFactory, tmp_path: Any
) -> None:
    server = serve(chat=EchoChat(), settings=make_settings(tmp_path / "d", max_ws_frame_bytes=1024))
    async with websockets.connect(ws_url(server.url)) as big, websockets.connect(ws_url(server.url)) as calm:
        await recv(big)
        await recv(calm)
        await big.send(json.dumps({"type": "chat", "message": "x" * 2000}))
        event = await recv(big)
        assert event["type"] == "error"
        assert event["error"]["field"] == "frame" and event["error"]["limit"] == 1024
        with pytest.raises(ConnectionClosed) as closed:
            await recv(big)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await calm.send(json.dumps({"type": "chat", "message": "fine"}))
        reply, _ = await until(calm, "reply")
        assert reply["response"] == "You said: fine"


async def test_handshake_errors(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    with pytest.raises(InvalidStatus) as missing:
        async with websockets.connect(ws_url(server.url, None)):
            pass
    assert missing.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as bad:
        async with websockets.connect(ws_url(server.url, "no/slashes")):
            pass
    assert bad.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as foreign:
        async with websockets.connect(ws_url(server.url), origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert foreign.value.response.status_code == 403
    async with websockets.connect(ws_url(server.url), origin=server.url) as ws:  # type: ignore[arg-type]
        assert (await recv(ws))["type"] == "connected"
    async with httpx.AsyncClient(base_url=server.url) as client:
        plain = await client.get("/ws", params={"sessionId": SID})
        assert plain.status_code == 426
        assert plain.json()["error"] == "Expected Upgrade: websocket"
        nosid = await client.get("/ws")
        assert nosid.status_code == 400
        assert nosid.json()["error"] == "Missing sessionId"


async def test_client_ids_are_echoed_so_a_client_can_match_its_sends(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with websockets.connect(ws_url(server.url)) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "chat", "message": "  ", "clientId": "c-1"}))
        refused = await recv(ws)
        assert refused["type"] == "error" and refused["clientId"] == "c-1"
        await ws.send(json.dumps({"type": "chat", "message": "ok", "clientId": "c-2"}))
        accepted, _ = await until(ws, "user_message")
        assert accepted["clientId"] == "c-2"


async def test_a_socket_joining_mid_reply_gets_the_text_so_far_then_the_rest(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat(token_interval=0.1))
    async with websockets.connect(ws_url(server.url)) as first:
        await recv(first)
        await first.send(json.dumps({"type": "chat", "message": "alpha beta gamma delta epsilon"}))
        started, _ = await until(first, "turn_started")
        await until(first, "chunk")
        await until(first, "chunk")
        async with websockets.connect(ws_url(server.url)) as late:
            assert (await recv(late))["type"] == "connected"
            caught = await recv(late)
            assert caught["type"] == "turn_started" and caught["turnId"] == started["turnId"]
            # the reply from its first chunk (the bus replays them), then the live ones
            reply, rest = await until(late, "reply")
            assert rest and all(e["type"] == "chunk" for e in rest)
            text = "".join(e["text"] for e in rest)
            assert text == reply["response"] == "You said: alpha beta gamma delta epsilon"
            ids = [e["eventId"] for e in (caught, *rest, reply)]
            assert len(set(ids)) == len(ids)


async def test_a_socket_that_reconnects_after_an_event_id_gets_what_it_missed_once(
    serve: ServerFactory,
) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        async with websockets.connect(ws_url(server.url)) as first:
            assert "resumed" not in await recv(first)
            await client.post("/api/chat", json={"sessionId": SID, "message": "one"})
            reply, before = await until(first, "reply")
        seen = reply["eventId"]
        # the socket is gone; two more turns happen meanwhile
        for text in ("two", "three"):
            assert (
                await client.post("/api/chat", json={"sessionId": SID, "message": text})
            ).status_code == 200
        async with websockets.connect(ws_url(server.url) + f"&after={seen}") as again:
            hello = await recv(again)
            assert hello["type"] == "connected" and hello["resumed"] is True
            missed = []
            while len([e for e in missed if e["type"] == "reply"]) < 2:
                missed.append(await recv(again))
    assert [e["message"]["content"] for e in missed if e["type"] == "user_message"] == ["two", "three"]
    assert [e["response"] for e in missed if e["type"] == "reply"] == ["You said: two", "You said: three"]
    # the user's list events carry no eventId: they are no part of the session's resume
    ids = [e["eventId"] for e in (*before, reply, *missed) if e["type"] != "conversations"]
    assert len(set(ids)) == len(ids)  # nothing twice


async def test_resuming_after_an_event_the_bus_no_longer_keeps_says_so(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with websockets.connect(ws_url(server.url) + "&after=99999-0") as ws:
        hello = await recv(ws)
    assert hello["type"] == "connected" and hello["resumed"] is False


async def test_a_resume_id_that_is_not_one_is_refused_before_the_upgrade(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    with pytest.raises(InvalidStatus) as caught:
        async with websockets.connect(ws_url(server.url) + "&after=yesterday"):
            pass
    assert caught.value.response.status_code == 400
    assert b"after" in caught.value.response.body
