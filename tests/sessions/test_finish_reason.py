"""A reply cut off by max_tokens says so: the model's finish reason reaches the stored reply, the
`reply` event and /api/history, through the real OpenAI-compatible provider and its stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.config import Settings
from parley.standins import openai as openai_standin
from parley.standins.server import BackgroundServer
from tests.conftest import ServerFactory, make_settings, sse_events

SID = "session-finish"
ASK = "tell me about the sea and the ships"  # the stand-in answers "You said: " and these 8 words


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with BackgroundServer(openai_standin.create_app()) as server:
        yield server


def openai_settings(tmp_path: Path, upstream: BackgroundServer, max_tokens: int) -> Settings:
    return make_settings(
        tmp_path / "data",
        llm="openai",
        llm_base_url=upstream.url + "/v1",
        llm_model="gpt-4o-mini",
        max_tokens=max_tokens,
    )


@pytest.mark.parametrize(
    ("max_tokens", "reason", "reply"), [(4, "length", "You said: tell me"), (64, "stop", None)]
)
async def test_the_finish_reason_is_stored_and_sent(
    serve: ServerFactory,
    upstream: BackgroundServer,
    tmp_path: Path,
    max_tokens: int,
    reason: str,
    reply: str | None,
) -> None:
    server = serve(settings=openai_settings(tmp_path, upstream, max_tokens))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        answer = (await client.post("/api/chat", json={"message": ASK, "sessionId": SID})).json()
        streamed = await client.post("/api/chat", json={"message": ASK, "sessionId": SID, "stream": True})
        history = (await client.get("/api/history", params={"sessionId": SID})).json()["messages"]
    expected = reply or f"You said: {ASK}"
    assert answer["response"] == expected
    assert answer["status"] == "complete"
    assert answer["message"]["finishReason"] == reason
    events = dict(sse_events(streamed.text))
    assert events["reply"]["finishReason"] == reason
    assert events["reply"]["message"]["finishReason"] == reason
    assert events["reply"]["response"] == expected
    # Stored: both replies are complete, and say why they ended; user messages have no reason.
    assert [(m["role"], m["status"], m["finishReason"]) for m in history] == [
        ("user", "complete", None),
        ("assistant", "complete", reason),
    ] * 2
    assert [m["content"] for m in history[1::2]] == [expected, expected]
