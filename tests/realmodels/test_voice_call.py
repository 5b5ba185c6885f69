"""A WebRTC voice call on the bundled models: Piper's speech in, a real spoken reply out.

The caller is an aiortc peer on loopback (tests/rtc/test_loopback.py's `dial`); the server side
is Parley's call stack with Silero VAD, Whisper base, SmolLM2 and Piper joe, nothing stood in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from parley.audio.pcm import resample
from parley.bus.memory import LocalBus
from parley.config import Settings
from parley.providers.factory import build_chat, build_stt, build_tts, build_vad
from parley.providers.tts import TTSProvider
from parley.rtc.registry import CallConfig, CallRegistry
from parley.sessions.keys import session_key
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.store.sqlite import SQLiteStore
from parley.store.users import LOCAL_USER
from parley.voice.pipeline import VoiceConfig
from tests.realmodels.conftest import spoken, word_error_rate
from tests.rtc.test_loopback import Client, dial, http_client

QUESTION = "What is the capital of France?"
INTERRUPTION = "Stop talking please."


@dataclass
class Call:
    http: httpx.AsyncClient
    calls: CallRegistry
    store: SQLiteStore
    tts: TTSProvider


@pytest.fixture
async def call(settings: Settings, tmp_path: Path) -> AsyncIterator[Call]:
    store = SQLiteStore(tmp_path / "voice.db")
    await store.open()
    chat, stt, tts = build_chat(settings), build_stt(settings), build_tts(settings)
    for part in (chat, stt, tts):  # what `parley serve` does at start-up
        await part.warm_up()
    sessions = SessionRegistry(
        store=store,
        chat=chat,
        bus=LocalBus(),
        config=SessionConfig(
            system_prompt="You are a helpful voice assistant. Answer in one or two sentences.",
            history_limit=20,
            max_tokens=96,
            max_queued_turns=4,
        ),
    )
    calls = CallRegistry(
        sessions=sessions,
        vad=build_vad(settings),
        stt=stt,
        tts=tts,
        config=CallConfig(idle_seconds=120.0, voice=VoiceConfig.from_settings(settings)),
    )
    async with http_client(calls) as http:
        yield Call(http, calls, store, tts)
    await calls.aclose()
    await sessions.aclose()
    for part in (chat, stt, tts):
        await part.aclose()
    await store.aclose()


async def say(call: Call, client: Client, text: str) -> None:
    pcm, rate = await spoken(call.tts, text)
    client.mic.say(resample(pcm, rate, 16000))


async def until(client: Client, predicate: str, count: int = 1, timeout: float = 120.0) -> None:
    """Until `count` events of type `predicate` arrived (polled: they come from aiortc's loop)."""
    deadline = time.monotonic() + timeout
    while client.types().count(predicate) < count:
        errors = [m for m in client.messages if m["type"] == "error"]
        assert not errors, errors
        assert time.monotonic() < deadline, f"no {predicate} x{count}; got {client.types()}"
        await asyncio.sleep(0.02)


async def open_channel(client: Client) -> None:
    deadline = time.monotonic() + 15
    while client.channel.readyState != "open":
        assert time.monotonic() < deadline, "data channel did not open"
        await asyncio.sleep(0.01)


async def test_a_spoken_question_gets_a_real_spoken_answer_and_both_are_in_history(call: Call) -> None:
    client = await dial(call.http, "voice-real")
    try:
        await open_channel(client)
        await say(call, client, QUESTION)
        await until(client, "assistant_stopped_speaking")
        transcript = next(m for m in client.messages if m["type"] == "transcript")
        assert word_error_rate(QUESTION, transcript["text"]) <= 0.2, transcript
        reply = next(m for m in client.messages if m["type"] == "reply")
        assert reply["response"].strip()
        # The reply track carried speech, not silence: Piper's voice is far above the mic's noise.
        loud = [rms for _, rms in client.heard if rms > 500]
        assert len(loud) * 0.02 > 0.5, "less than half a second of audible reply"
    finally:
        await call.http.post("/api/hangup", json={"callId": client.call_id})
        await client.close()
    messages = await call.store.list_messages(session_key(LOCAL_USER.id, "voice-real"))
    assert [(m.role, m.status) for m in messages] == [("user", "complete"), ("assistant", "complete")]
    assert word_error_rate(QUESTION, messages[0].content) <= 0.2
    assert messages[1].content == reply["response"]


async def test_talking_over_a_real_reply_interrupts_it_and_the_next_turn_is_answered(call: Call) -> None:
    client = await dial(call.http, "voice-barge")
    try:
        await open_channel(client)
        await say(call, client, "Tell me a long story about a dragon and a knight.")
        await until(client, "assistant_started_speaking")
        await say(call, client, INTERRUPTION)
        await until(client, "assistant_stopped_speaking", count=2)
        stopped = [m for m in client.messages if m["type"] == "assistant_stopped_speaking"]
        assert stopped[0]["interrupted"] is True
        assert stopped[1]["interrupted"] is False
    finally:
        await call.http.post("/api/hangup", json={"callId": client.call_id})
        await client.close()
    messages = await call.store.list_messages(session_key(LOCAL_USER.id, "voice-barge"))
    roles = [m.role for m in messages]
    assert roles == ["user", "assistant", "user", "assistant"], [(m.role, m.status) for m in messages]
    # History keeps only what was heard of the interrupted reply, and the interruption itself.
    assert messages[1].status == "interrupted"
    heard = next(m for m in client.messages if m["type"] == "assistant_stopped_speaking")
    assert messages[1].content.strip() and heard["interrupted"]
    assert word_error_rate(INTERRUPTION, messages[2].content) <= 0.34
    assert messages[3].status == "complete" and messages[3].content.strip()
