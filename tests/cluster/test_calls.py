"""A voice call lives on the node that answered its offer; its hang-up works from any node, and
the call's node runs the session's turns while the call lasts."""

from __future__ import annotations

import httpx

from tests.cluster.conftest import Cluster, session_id
from tests.rtc.test_loopback import dial


async def test_a_call_is_hung_up_through_another_node(cluster: Cluster) -> None:
    session = session_id("call")
    async with (
        httpx.AsyncClient(base_url=cluster[0].url, timeout=None) as first,
        httpx.AsyncClient(base_url=cluster[1].url, timeout=None) as second,
    ):
        call = await dial(first, session)  # the call's media is on node 1
        try:
            # node 2 does not hold the call: it hands the hang-up to node 1
            r = await second.post("/api/hangup", json={"callId": call.call_id})
            assert r.status_code == 200, r.text
            # gone everywhere now: a second hang-up is "no such call" on either node
            for http in (first, second):
                again = await http.post("/api/hangup", json={"callId": call.call_id})
                assert again.status_code == 404, again.text
                assert again.json()["field"] == "callId"
            unknown = await second.post("/api/hangup", json={"callId": "call_nobody"})
            assert unknown.status_code == 404
        finally:
            await call.close()


async def test_text_turns_go_to_the_node_of_the_call_while_it_lasts(cluster: Cluster) -> None:
    session = session_id("call-owner")
    async with (
        httpx.AsyncClient(base_url=cluster[0].url, timeout=None) as first,
        httpx.AsyncClient(base_url=cluster[2].url, timeout=None) as third,
    ):
        # node 3 owns the conversation first
        r = await third.post("/api/chat", json={"sessionId": session, "message": "typed before"})
        assert r.json()["status"] == "complete"
        call = await dial(first, session)  # the call takes the session to node 1
        try:
            r = await third.post("/api/chat", json={"sessionId": session, "message": "typed during"})
            assert (r.json()["status"], r.json()["response"]) == ("complete", "You said: typed during")
            log = "\n".join(cluster[0].logs)
            assert f"session={session}" in log and "typed during" not in log  # ran there, text unlogged
        finally:
            await first.post("/api/hangup", json={"callId": call.call_id})
            await call.close()
