"""Turn-taking when speech-to-text is slower than the user.

Real Silero VAD on espeak-ng speech, real sessions and storage; speech-to-text is `GatedSTT`, which
answers each recording only when the test says so, so "STT is still busy" is a state the test
holds, not a race against a clock. Audio is pushed as fast as the call takes it, on a manual
clock; the stand-in transport reads every frame as soon as one is queued.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parley.bus.memory import LocalBus
from parley.providers.factory import build_vad
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencyTTS, GatedSTT
from parley.sessions.events import Event
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.store.sqlite import SQLiteStore
from parley.voice.pipeline import VoiceCall, VoiceConfig
from parley.voice.playout import Playout
from tests.audio import espeak_voiced
from tests.conftest import make_settings

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz, what a WebRTC transport delivers
NOISE = 0.003 * 32767
SID = "turn-taking"
CONFIG = SessionConfig(system_prompt="sys", history_limit=20, max_tokens=256, max_queued_turns=4)
# An utterance given to STT is its speech plus the pre-roll (0.3 s) and tail (0.1 s), give or take
# where the VAD put the edges.
SLACK = 0.6


@functools.lru_cache(maxsize=16)
def speech(text: str) -> np.ndarray:
    """espeak-ng saying `text` (no commas: one utterance), 16 kHz, cut to the voice."""
    return espeak_voiced(text, RATE, speed=170)


def seconds(text: str) -> float:
    return len(speech(text)) / RATE


class ManualClock:
    """The call's clock: moved on by the audio pushed and the frames read, never by waiting."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Mic:
    """Pushes 20 ms frames of faint noise (with speech mixed in) into the call, all at once."""

    def __init__(self, push: Callable[[bytes], None], clock: ManualClock) -> None:
        self._push = push
        self._clock = clock
        self._rng = np.random.default_rng(7)

    def silence(self, secs: float) -> None:
        self._send(np.zeros(int(secs * RATE)))

    def say(self, text: str, *, part: tuple[float, float] = (0.0, 1.0)) -> None:
        """`text`, or the `part` of it between two fractions (speech going on across pushes)."""
        voice = speech(text)
        self._send(voice[int(part[0] * len(voice)) : int(part[1] * len(voice))].astype(np.float64))

    def _send(self, voice: np.ndarray) -> None:
        noisy = voice + self._rng.normal(0.0, NOISE, len(voice))
        pcm = np.clip(noisy, -32768, 32767).astype("<i2").tobytes()
        for at in range(0, len(pcm), FRAME * 2):
            self._clock.now += FRAME / RATE
            self._push(pcm[at : at + FRAME * 2])


@dataclass
class Recorder:
    """Events as the call's client saw them, and as the session's bus carried them."""

    client: list[dict[str, Any]] = field(default_factory=list)
    bus: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, event: Event) -> None:
        self.client.append(json.loads(event.data))
        self.changed.set()

    def on_bus(self, data: str) -> None:
        self.bus.append(json.loads(data))
        self.changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self.changed.clear()
            await self.changed.wait()

    def types(self) -> list[str]:
        return [e["type"] for e in self.client]

    def count(self, kind: str) -> int:
        return self.types().count(kind)

    def stages(self, events: list[dict[str, Any]] | None = None) -> list[str]:
        return [e["stage"] for e in (self.client if events is None else events) if e["type"] == "call_stage"]

    def settled(self) -> bool:
        """A reply was spoken and the call is back to listening."""
        stages = self.stages()
        return "speaking" in stages and stages[-1] == "listening"


@dataclass
class Harness:
    call: VoiceCall
    stt: GatedSTT
    sessions: SessionRegistry
    store: SQLiteStore
    mic: Mic
    events: Recorder

    def busy(self) -> bool:
        """The session has a turn (queued or running): the call has decided to answer."""
        return self.sessions.get(SID).busy

    async def history(self) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in await self.store.list_messages(SID)]


async def transport(playout: Playout, clock: ManualClock) -> None:
    """Reads every frame the moment it is queued, as a transport with no pacing would."""
    while True:
        await playout.queued.wait()
        while playout.read_frame() is not None:
            clock.now += 0.02


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    model = build_vad(make_settings(tmp_path / "data", vad="silero"))
    assert model is not None, "Silero must run here"
    store = SQLiteStore(tmp_path / "voice.db")
    await store.open()
    bus = LocalBus()
    sessions = SessionRegistry(store=store, chat=EchoChat(), bus=bus, config=CONFIG)
    sub = bus.subscribe(SID)
    stt = GatedSTT()
    recorder = Recorder()
    clock = ManualClock()
    call = VoiceCall(
        SID,
        sessions=sessions,
        model=model.fresh(),
        stt=stt,
        tts=FixedLatencyTTS(first_byte=0.0),
        config=VoiceConfig(),
        on_event=recorder.on_event,
        clock=clock,
    )

    async def drain_bus() -> None:
        while True:
            recorder.on_bus(await sub.get())

    call.start()
    helpers = [asyncio.create_task(transport(call.playout, clock)), asyncio.create_task(drain_bus())]
    try:
        yield Harness(call, stt, sessions, store, Mic(call.push, clock), recorder)
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await call.aclose()
        await sessions.aclose()
        await store.aclose()


FIRST = "what is the weather like"
SECOND = "in the city of paris today"


async def test_two_utterances_while_stt_is_busy_are_each_transcribed_once_and_answered_as_one(
    harness: Harness,
) -> None:
    h, ev = harness, harness.events
    h.mic.silence(0.5)
    h.mic.say(FIRST)
    h.mic.silence(0.6)
    first = await h.stt.next_call()

    # The user speaks again while the first utterance is still in STT.
    h.mic.say(SECOND)
    h.mic.silence(0.6)
    await ev.until(lambda: ev.count("user_stopped_speaking") == 2)
    assert not first.cancelled, "the first transcription was thrown away"
    assert len(h.stt.calls) == 1  # the second waits for STT: one transcription at a time

    first.answer("What is the weather like")
    second = await h.stt.next_call()
    # The first transcript is held, not answered: the user had gone on before it came back.
    await ev.until(lambda: ev.count("transcript") == 1)
    assert not h.busy()
    second.answer("in Paris today?")
    await ev.until(lambda: ev.count("assistant_stopped_speaking") == 1)

    # Each utterance went to STT once, and only its own audio: nothing grew.
    assert len(h.stt.calls) == 2
    for heard, text in zip(h.stt.seconds, (FIRST, SECOND), strict=True):
        assert seconds(text) <= heard <= seconds(text) + SLACK, (heard, seconds(text))
    assert [e["text"] for e in ev.client if e["type"] == "transcript"] == [
        "What is the weather like",
        "in Paris today?",
    ]
    # One turn, the transcripts joined as text.
    question = "What is the weather like in Paris today?"
    assert await h.history() == [("user", question), ("assistant", f"You said: {question}")]
    await ev.until(ev.settled)
    assert ev.stages() == ["transcribing", "thinking", "speaking", "listening"]


async def test_a_transcript_back_while_the_user_still_speaks_waits_for_the_rest(harness: Harness) -> None:
    h, ev = harness, harness.events
    h.mic.silence(0.5)
    h.mic.say("turn on")
    h.mic.silence(0.6)
    first = await h.stt.next_call()
    h.mic.say("the lights in the kitchen please", part=(0.0, 0.5))
    await ev.until(lambda: ev.count("user_started_speaking") == 2)
    assert not first.cancelled, "the first transcription was thrown away"

    first.answer("Turn on")
    await ev.until(lambda: ev.count("transcript") == 1 and len(ev.stages()) >= 2)
    assert not h.busy()  # the user is still speaking: no turn yet
    assert ev.stages() == ["transcribing", "listening"]

    h.mic.say("the lights in the kitchen please", part=(0.5, 1.0))
    h.mic.silence(0.6)
    second = await h.stt.next_call()
    assert ev.count("user_stopped_speaking") == 2
    second.answer("the kitchen lights.")
    await ev.until(ev.settled)

    assert len(h.stt.calls) == 2
    assert h.stt.seconds[1] <= seconds("the lights in the kitchen please") + SLACK
    assert await h.history() == [
        ("user", "Turn on the kitchen lights."),
        ("assistant", "You said: Turn on the kitchen lights."),
    ]
    assert ev.stages() == ["transcribing", "listening", "transcribing", "thinking", "speaking", "listening"]


async def test_a_held_transcript_is_answered_alone_when_the_rest_was_only_noise(harness: Harness) -> None:
    h, ev = harness, harness.events
    h.mic.silence(0.5)
    h.mic.say(FIRST)
    h.mic.silence(0.6)
    first = await h.stt.next_call()
    h.mic.say("um")
    h.mic.silence(0.6)
    await ev.until(lambda: ev.count("user_stopped_speaking") == 2)
    assert not first.cancelled, "the first transcription was thrown away"
    first.answer("What is the weather like?")
    second = await h.stt.next_call()
    assert not h.busy()
    second.answer("")  # nothing a recogniser could make out
    await ev.until(ev.settled)

    assert await h.history() == [
        ("user", "What is the weather like?"),
        ("assistant", "You said: What is the weather like?"),
    ]
    assert ev.stages() == ["transcribing", "thinking", "speaking", "listening"]


async def test_each_stage_is_announced_in_order_to_the_call_and_the_session(harness: Harness) -> None:
    h, ev = harness, harness.events
    h.mic.silence(0.5)
    h.mic.say(FIRST)
    h.mic.silence(0.6)
    pending = await h.stt.next_call()
    pending.answer("What is the weather like?")
    await ev.until(lambda: ev.count("assistant_stopped_speaking") == 1)
    assert "speaking" in ev.stages()
    await ev.until(ev.settled)
    await ev.until(lambda: ev.stages(ev.bus) == ev.stages())

    # While STT works the call says so (where a slow recogniser spends its seconds), and so on.
    order = [e["stage"] if e["type"] == "call_stage" else e["type"] for e in ev.client]
    milestones = [
        "user_started_speaking",
        "user_stopped_speaking",
        "transcribing",
        "transcript",
        "thinking",
        "user_message",
        "chunk",
        "assistant_started_speaking",
        "speaking",
        "assistant_stopped_speaking",
        "listening",
    ]
    seen = [kind for kind in order if kind in milestones]
    assert list(dict.fromkeys(seen)) == milestones
    assert ev.stages() == ["transcribing", "thinking", "speaking", "listening"]
    stage_events = [e for e in ev.bus if e["type"] == "call_stage"]
    assert all(e["callId"] == h.call.id and e["sessionId"] == SID for e in stage_events)
