"""kill -9 of the node holding a voice call, in the middle of the call's spoken turn: a survivor
takes the conversation over, the transcript is in history once, the reply ends failed (never left
pending) and the next turn works. Real WebRTC (an aiortc caller on loopback), Silero VAD and
espeak-ng speech; speech-to-text and the chat model are the OpenAI-compatible stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.cluster.conftest import Cluster, history, session_id, start_cluster
from tests.cluster.test_failover import settled_history
from tests.conftest import require_tool
from tests.rtc.test_loopback import dial
from tests.voice.test_pipeline import speech


@pytest.fixture(scope="module")
def voice_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    extra = {"PARLEY_STT": "openai", "PARLEY_STT_MODEL": "whisper-1", "PARLEY_VAD": "silero"}
    yield from start_cluster(tmp_path_factory.mktemp("voice-cluster"), count=2, extra=extra)


async def test_the_calls_node_killed_mid_turn_leaves_the_turn_failed_and_the_session_served(
    voice_cluster: Cluster,
) -> None:
    require_tool("espeak-ng", "the caller's speech")
    cluster = voice_cluster
    session = session_id("voice-failover")
    hold = "voice-" + session
    caller_node, survivor = cluster[0], cluster[1]
    async with (
        httpx.AsyncClient(base_url=caller_node.url, timeout=None) as first,
        httpx.AsyncClient(base_url=survivor.url, timeout=None) as second,
    ):
        call = await dial(first, session)  # the call, and so the conversation's turns, on node 1
        try:
            await call.mic.flowing.wait()
            cluster.holds.hold_next(hold)  # the spoken turn's reply stops after its first words
            call.mic.say(speech("Hello there, how are you today?"))
            await cluster.holds.started(hold)
            # acknowledged: the caller saw its words stored and the reply begin
            await call.until("user_message")
            await call.until("chunk")
            caller_node.kill()
        finally:
            cluster.holds.release(hold)
            await call.close()

        turns = [m for m in await history(second, survivor, session) if m["role"] == "user"]
        assert len(turns) == 1, turns
        turn_id = turns[0]["turnId"]
        stored = await settled_history(second, cluster, session, turn_id)
        assert [(m["role"], m["status"], m["turnId"]) for m in stored] == [
            ("user", "complete", turn_id),
            ("assistant", "failed", turn_id),
        ]
        assert stored[0]["content"].startswith("audio of ")  # the stand-in's transcript, once

        answer = await second.post("/api/chat", json={"sessionId": session, "message": "after the call"})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["response"]) == (
            "complete",
            "You said: after the call",
        )
