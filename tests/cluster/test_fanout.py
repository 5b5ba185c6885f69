"""Every event of a turn reaches every socket of its session, whichever node each socket is on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.cluster.conftest import Cluster, history, open_socket, session_id, sse_events, turn_events


async def whole_stream(response: httpx.Response) -> list[dict[str, Any]]:
    return [event async for event in sse_events(response)]


def shape(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Each event's type and its text (a chunk's piece, a reply's response, a message's content)."""
    out = []
    for event in events:
        text = event.get("text") or event.get("response") or (event.get("message") or {}).get("content", "")
        out.append((event["type"], text))
    return out


async def test_a_turn_sent_to_one_node_reaches_sockets_of_its_session_on_the_others(
    cluster: Cluster,
) -> None:
    session, other = session_id("fanout"), session_id("fanout-other")
    message = "fan out across three nodes please, every word in order"
    on_1, on_2 = await open_socket(cluster[0], session), await open_socket(cluster[1], session)
    elsewhere = await open_socket(cluster[0], other)
    async with httpx.AsyncClient(timeout=None) as http:
        try:
            payload = {"sessionId": session, "message": message, "stream": True}
            async with http.stream("POST", f"{cluster[2].url}/api/chat", json=payload) as response:
                assert response.status_code == 200, await response.aread()
                turn_id = response.headers["x-turn-id"]
                streamed, seen_1, seen_2 = await asyncio.gather(
                    whole_stream(response), turn_events(on_1, turn_id), turn_events(on_2, turn_id)
                )

            reply = "You said: " + message
            kinds = [event["type"] for event in seen_1]
            assert kinds[:2] == ["user_message", "turn_started"], kinds
            assert kinds[-1] == "reply" and set(kinds[2:-1]) == {"chunk"}, kinds
            assert "".join(e["text"] for e in seen_1 if e["type"] == "chunk") == reply
            assert seen_1[0]["message"]["content"] == message
            assert seen_1[-1]["response"] == reply
            # the same events, in the same order, with the same text, on both nodes
            assert shape(seen_2) == shape(seen_1)
            assert all(event["sessionId"] == session for event in seen_1 + seen_2)
            # the sender's own stream (node 3) got the whole turn too
            assert [e for e in streamed if e.get("turnId") == turn_id][-1]["response"] == reply
            assert "".join(e["text"] for e in streamed if e["type"] == "chunk") == reply

            stored = await history(http, cluster[0], session)
            assert [(m["role"], m["content"], m["status"]) for m in stored] == [
                ("user", message, "complete"),
                ("assistant", reply, "complete"),
            ]

            # The other session's socket heard nothing of it: the first events it gets are those of
            # a turn of its own, sent after the first one ended everywhere.
            answer = await http.post(
                f"{cluster[2].url}/api/chat", json={"sessionId": other, "message": "mine"}
            )
            assert answer.status_code == 200, answer.text
            own_turn = answer.json()["turnId"]
            while (event := json.loads(await elsewhere.recv()))["type"] != "reply":
                if event["type"] == "conversations":
                    continue  # the user's list: every socket of the user hears it, by design
                assert event.get("sessionId") == other and event.get("turnId") == own_turn, event
            assert event["turnId"] == own_turn and event["sessionId"] == other
        finally:
            for ws in (on_1, on_2, elsewhere):
                await ws.close()
