"""One writer per session across nodes: turns sent anywhere run on the session's owner, in order.

A session's owner is the node that received its first turn (the session directory's lease).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.cluster.conftest import (
    Cluster,
    history,
    open_socket,
    prompts,
    session_id,
    sse_events,
    turn_events,
)

BURST = 40


def said(message: str) -> str:
    return "You said: " + message


async def test_turns_sent_at_once_through_every_node_are_stored_once_each_in_turn_order(
    cluster: Cluster,
) -> None:
    session = session_id("burst")
    async with httpx.AsyncClient(timeout=None) as http:

        async def send(node_index: int, message: str) -> dict[str, Any]:
            url = f"{cluster[node_index].url}/api/chat"
            response = await http.post(url, json={"sessionId": session, "message": message})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        # node 1 becomes the owner; the burst then comes in through all three nodes at once
        first = await send(0, "the first turn")
        assert first["status"] == "complete" and first["response"] == said("the first turn")
        messages = [f"burst turn {i} via node {i % 3 + 1}" for i in range(BURST)]
        answers = await asyncio.gather(*(send(i % 3, m) for i, m in enumerate(messages)))
        for message, answer in zip(messages, answers, strict=True):
            assert (answer["status"], answer["response"]) == ("complete", said(message)), answer
        assert len({answer["turnId"] for answer in answers}) == BURST

        for node in cluster.nodes:
            stored = await history(http, node, session)
            users = [m for m in stored if m["role"] == "user"]
            # none lost, none duplicated
            assert sorted(m["content"] for m in users) == sorted(["the first turn", *messages])
            assert len(stored) == 2 * (BURST + 1), [(m["role"], m["content"]) for m in stored]
            # never interleaved: each reply directly follows its own user message
            for user, reply in zip(stored[::2], stored[1::2], strict=True):
                assert (user["role"], reply["role"]) == ("user", "assistant"), (user, reply)
                assert reply["turnId"] == user["turnId"], (user, reply)
                assert reply["content"] == said(user["content"]) and reply["status"] == "complete"
            assert [m["id"] for m in stored] == sorted(m["id"] for m in stored)

        # Strictly one after another: each turn ran on the whole conversation before it, every
        # earlier reply finished (a turn run beside another would miss it, or see it pending).
        conversation = [(m["role"], m["content"]) for m in stored]
        sent = prompts(cluster, {"the first turn", *messages})
        assert len(sent) == BURST + 1
        for index in range(0, len(conversation), 2):
            user_text = conversation[index][1]
            assert sent[user_text] == conversation[: index + 1], f"turn {index // 2} ran beside another"


# Once flaky: the stop's cancel landed in the owner's publish of a chunk, and redis-py swallowed
# it (parley/bus/cancel.py); tests/bus/test_redis.py pins that down.
async def test_a_stop_sent_to_one_node_stops_the_turn_running_on_another(cluster: Cluster) -> None:
    session = session_id("stop")
    hold = "hold-" + session
    message = f"a long answer please #hold:{hold}"
    watcher = await open_socket(cluster[2], session)  # node 3 only watches
    async with httpx.AsyncClient(timeout=None) as http:
        try:
            payload = {"sessionId": session, "message": message, "stream": True}
            # node 2 gets the session's first turn, so it owns the session and runs the turn
            async with http.stream("POST", f"{cluster[1].url}/api/chat", json=payload) as response:
                assert response.status_code == 200, await response.aread()
                turn_id = response.headers["x-turn-id"]
                await cluster.holds.started(hold)  # streaming on node 2, held mid-reply

                stop = await http.post(
                    f"{cluster[0].url}/api/stop", json={"sessionId": session, "turnId": turn_id}
                )
                assert stop.status_code == 200, stop.text
                assert stop.json() == {"stopped": True, "turnId": turn_id}

                streamed = [event async for event in sse_events(response)]
            seen = await turn_events(watcher, turn_id)
            # the upstream call itself was cut off, not left streaming to nobody: awaited while
            # the reply is still held (a release first would let the held stream end normally)
            await cluster.holds.abandoned(hold)
        finally:
            cluster.holds.release(hold)
            await watcher.close()

        assert seen[-1]["type"] == "cancelled", seen
        assert [e["type"] for e in streamed if e.get("turnId") == turn_id][-1] == "cancelled"
        stored = await history(http, cluster[0], session)
        assert [(m["role"], m["status"]) for m in stored] == [
            ("user", "complete"),
            ("assistant", "cancelled"),
        ]
        assert stored[1]["turnId"] == turn_id
