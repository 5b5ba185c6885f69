"""The user's channel across nodes: a conversation created, renamed, retitled by its first turn or
deleted through one node reaches the user's sockets on the others, whatever conversation each is on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

from tests.cluster.conftest import Cluster, open_socket, session_id


async def conversations_event(ws: ClientConnection) -> dict[str, Any]:
    """The next `conversations` event (the socket's session events are skipped)."""
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if event["type"] == "conversations":
            assert "eventId" not in event, event  # the session's ids alone ride on a socket's events
            return event


async def test_a_change_on_one_node_reaches_the_users_sockets_on_the_others(cluster: Cluster) -> None:
    on_1 = await open_socket(cluster[0], session_id("user-a"))
    on_2 = await open_socket(cluster[1], session_id("user-b"))
    sockets = (on_1, on_2)
    async with httpx.AsyncClient(timeout=30) as http:
        try:
            r = await http.post(f"{cluster[2].url}/api/sessions", json={"title": "from node 3"})
            assert r.status_code == 201, r.text
            made = r.json()
            for ws in sockets:
                assert await conversations_event(ws) == {
                    "type": "conversations",
                    "action": "created",
                    "session": made,
                }

            sid = made["sessionId"]
            r = await http.patch(f"{cluster[0].url}/api/sessions/{sid}", json={"title": "renamed on 1"})
            assert r.status_code == 200, r.text
            for ws in sockets:
                event = await conversations_event(ws)
                assert (event["action"], event["session"]) == ("renamed", r.json())

            # a first turn through node 3 runs on whichever node owns the session, and tells all
            fresh = session_id("user-fresh")
            r = await http.post(
                f"{cluster[2].url}/api/chat", json={"sessionId": fresh, "message": "Where do herons nest"}
            )
            assert r.status_code == 200, r.text
            for ws in sockets:
                created = await conversations_event(ws)
                assert (created["action"], created["session"]["sessionId"]) == ("created", fresh)
                titled = await conversations_event(ws)
                assert titled["action"] == "renamed"
                assert (titled["session"]["title"], titled["session"]["messageCount"]) == (
                    "Where do herons nest",
                    2,
                )

            r = await http.delete(f"{cluster[1].url}/api/sessions/{sid}")
            assert r.status_code == 200, r.text
            for ws in sockets:
                # the delete clears the conversation first, which may be told before
                while (event := await conversations_event(ws))["action"] != "deleted":
                    assert (event["action"], event["session"]["messageCount"]) == ("updated", 0)
                assert event["session"] == {"sessionId": sid}
        finally:
            for ws in sockets:
                await ws.close()
