"""The language the user picked reaches the call's speech-to-text; "Auto" leaves it to detection."""

from __future__ import annotations

import pytest

from tests.rtc.test_loopback import Server, dial, server
from tests.voice.test_pipeline import speech

__all__ = ["server"]  # the fixture, shared with the loopback tests


@pytest.mark.parametrize(("picked", "expected"), [("de", "de"), (None, "en")])
async def test_the_offer_language_fixes_the_calls_transcription_language(
    server: Server, picked: str | None, expected: str
) -> None:
    client = await dial(server.http, language=picked)
    try:
        client.mic.say(speech("hello there how are you today"))
        await client.until("transcript")
    finally:
        await server.http.post("/api/hangup", json={"callId": client.call_id})
        await client.close()
    transcript = next(m for m in client.messages if m["type"] == "transcript")
    # FixedLatencySTT answers in the language it is asked for, else its own ("en": detection).
    assert transcript["language"] == expected


async def test_a_malformed_language_is_refused_naming_the_field(server: Server) -> None:
    r = await server.http.post(
        "/api/offer", json={"sdp": "v=0", "type": "offer", "sessionId": "s1", "language": "not a tag"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "language"
    assert len(server.calls) == 0
