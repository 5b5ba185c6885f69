"""Voice latency on the bundled models: end of speech -> first reply audio, stage by stage.

    .venv/bin/python bench/voice_bundled.py [--turns 20] [--stop-secs 0.2] [--per-turn]

One call, in-process (`VoiceCall` fed 20 ms frames in real time, a 20 ms pacer reading its
playout as a WebRTC sender would), on what a new user runs: Silero VAD, Whisper base, SmolLM2 on
llama.cpp and Piper joe, each loaded ahead as `parley serve` does. Each turn is a different
question spoken by Piper, then silence until the reply has been played. Per turn, each stage is
stamped where it happens (the VAD's stop decision, the transcript, the first token, the first TTS
audio, the first audible frame taken by the pacer), all measured from the true end of speech.
Also the resident memory of the process with every model loaded. Prints markdown; exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import rss_mb
from parley.audio.pcm import resample
from parley.bus.memory import LocalBus
from parley.config import Settings
from parley.providers.factory import build_chat, build_stt, build_tts, build_vad
from parley.providers.llm import ChatDelta, ChatProvider, ChatRequest
from parley.providers.stt import AudioInput, STTProvider, Transcript
from parley.providers.tts import AudioChunk, TTSProvider
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.store.sqlite import SQLiteStore
from parley.voice.pipeline import VoiceCall, VoiceConfig
from parley.voice.playout import pace
from voice_common import AUDIBLE_RMS, FRAME, NOISE, RATE, percentile, rms, schedule, sleep_until

QUESTIONS = [
    "What is the capital of France?",
    "How many days are in a week?",
    "What color is the sky?",
    "Tell me a fun fact about cats.",
    "What is two plus two?",
]
STAGES = ("vad", "stt", "first token", "first tts audio", "first audio frame")


class Stamps:
    """The moments of each stage, in order; a turn takes the first of each after its end."""

    def __init__(self) -> None:
        self.at: dict[str, list[float]] = {stage: [] for stage in STAGES}

    def mark(self, stage: str) -> None:
        self.at[stage].append(time.perf_counter())


class TimedSTT(STTProvider):
    def __init__(self, inner: STTProvider, stamps: Stamps) -> None:
        self.inner, self.stamps, self.name = inner, stamps, inner.name

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        transcript = await self.inner.transcribe(audio, language=language)
        self.stamps.mark("stt")
        return transcript


class TimedChat(ChatProvider):
    def __init__(self, inner: ChatProvider, stamps: Stamps) -> None:
        self.inner, self.stamps, self.name, self.model = inner, stamps, inner.name, inner.model

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        first = True
        async for delta in self.inner.stream(request):
            if first and delta.text:
                self.stamps.mark("first token")
                first = False
            yield delta


class TimedTTS(TTSProvider):
    def __init__(self, inner: TTSProvider, stamps: Stamps) -> None:
        self.inner, self.stamps, self.name, self.voice = inner, stamps, inner.name, inner.voice

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        async for chunk in self.inner.synthesize(text, voice=voice, language=language):
            self.stamps.mark("first tts audio")
            yield chunk


async def spoken(tts: TTSProvider, text: str) -> np.ndarray:
    chunks = [chunk async for chunk in tts.synthesize(text)]
    pcm = resample(b"".join(c.pcm for c in chunks), chunks[0].sample_rate, RATE)
    samples = np.frombuffer(pcm, dtype="<i2")
    voiced = np.flatnonzero(np.abs(samples) > 64)
    return samples[voiced[0] : voiced[-1] + 1]


async def bench(turns: int, stop_secs: float, per_turn: bool = False) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="parley-voice-bundled-"))
    settings = Settings(_env_file=None, data_dir=tmp / "data", llm=None, stt=None, tts=None)  # type: ignore[call-arg]
    chat, stt, tts, vad = build_chat(settings), build_stt(settings), build_tts(settings), build_vad(settings)
    if vad is None:
        print("no voice activity detector here: pip install 'parley[local]'")
        return
    print(
        f"models: chat {chat.name} {chat.model}, stt {stt.name} {getattr(stt, 'model', '')}, tts {tts.name} {tts.voice}, vad {vad.name}"
    )
    rss_before = rss_mb(os.getpid())
    loaded = time.perf_counter()
    for part in (chat, tts, stt):
        await part.warm_up()
    loaded = time.perf_counter() - loaded
    voices = [await spoken(tts, q) for q in QUESTIONS]
    rss_loaded = rss_mb(os.getpid())
    stamps = Stamps()
    store = SQLiteStore(tmp / "voice.db")
    await store.open()
    sessions = SessionRegistry(
        store=store,
        chat=TimedChat(chat, stamps),
        bus=LocalBus(),
        config=SessionConfig(
            system_prompt="You are a helpful voice assistant. Answer in one short sentence.",
            history_limit=20,
            max_tokens=64,
            max_queued_turns=4,
        ),
    )
    stopped = asyncio.Event()
    # each turn's `metrics` event: how long each provider took (the call's own accounting)
    providers: dict[str, list[float]] = {}

    def on_event(event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "assistant_stopped_speaking":
            stopped.set()
        elif kind == "metrics":
            for name, ms in json.loads(event.data)["providers"].items():
                providers.setdefault(name, []).append(ms)

    call = VoiceCall(
        "bench-bundled",
        sessions=sessions,
        model=vad.fresh(),
        stt=TimedSTT(stt, stamps),
        tts=TimedTTS(tts, stamps),
        config=VoiceConfig(stop_secs=stop_secs),
        on_event=on_event,
    )
    feed = call.vad.feed_async

    async def stamped_feed(pcm: bytes) -> list[Any]:  # the VAD's stop decision, as it returns
        found = await feed(pcm)
        if any(e.kind == "speech_end" for e in found):
            stamps.mark("vad")
        return found

    call.vad.feed_async = stamped_feed  # type: ignore[method-assign]
    rng = np.random.default_rng(5)
    ends: list[float] = []

    def sink(at: float, frame: bytes | None) -> None:
        if frame is not None and rms(frame) > AUDIBLE_RMS:
            stamps.at["first audio frame"].append(at)

    call.start()
    pacer = asyncio.create_task(pace(call.playout, sink))
    start = time.perf_counter()
    index = 0

    async def push(samples: np.ndarray) -> None:
        nonlocal index
        audio = samples.astype(np.float64) + rng.normal(0.0, NOISE, len(samples))
        pcm = np.clip(audio, -32768, 32767).astype("<i2").tobytes()
        for k in range(0, len(pcm) - FRAME * 2 + 1, FRAME * 2):
            await sleep_until(schedule(start, index))
            call.push(pcm[k : k + FRAME * 2])
            index += 1

    try:
        await push(np.zeros(int(0.6 * RATE)))
        for turn in range(turns):
            voice = voices[turn % len(voices)]
            voice = np.concatenate([voice, np.zeros((-len(voice)) % FRAME)])
            stopped.clear()
            await push(voice)
            ends.append(time.perf_counter())
            # silence until the reply has been played (or 30 s), then a breath
            deadline = time.perf_counter() + 30.0
            while not stopped.is_set() and time.perf_counter() < deadline:
                await push(np.zeros(FRAME * 5))
            await push(np.zeros(int(0.4 * RATE)))
    finally:
        pacer.cancel()
        await asyncio.gather(pacer, return_exceptions=True)
        await call.aclose()
        await sessions.aclose()
        await store.aclose()
        for part in (chat, stt, tts):
            await part.aclose()
    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    missed = 0
    for k, end in enumerate(ends):
        until = ends[k + 1] if k + 1 < len(ends) else float("inf")
        firsts = {s: next((t for t in stamps.at[s] if end < t < until), None) for s in STAGES}
        if firsts["first audio frame"] is None:
            missed += 1
            continue
        for stage, at in firsts.items():
            if at is not None:
                per_stage[stage].append((at - end) * 1000)
        if per_turn:
            row = " ".join(f"{s}={(at - end) * 1000:.0f}" for s, at in firsts.items() if at is not None)
            print(f"turn {k + 1}: {row}")
    print(f"\n{turns} turns, {missed} without a reply; models loaded in {loaded:.1f} s")
    print("\n| stage (ms after the end of speech) | p50 | p95 | max |")
    print("|---|---|---|---|")
    for stage in STAGES:
        values = per_stage[stage]
        if values:
            print(
                f"| {stage} | {statistics.median(values):.0f} | {percentile(values, 95):.0f} | {max(values):.0f} |"
            )
    total = per_stage["first audio frame"]
    if total:
        verdict = "met" if statistics.median(total) < 1000 else "not met"
        print(f"\ngoal p50 < 1000 ms end of speech -> first reply audio: {verdict}")
    print("\n| provider (the call's metrics event, ms) | p50 | p95 | max |")
    print("|---|---|---|---|")
    for name, values in providers.items():
        print(
            f"| {name} | {statistics.median(values):.0f} | {percentile(values, 95):.0f} | {max(values):.0f} |"
        )
    print(
        f"\nresident memory: {rss_before:.0f} MB before loading, {rss_loaded:.0f} MB with every model loaded"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument(
        "--stop-secs", type=float, default=0.2, help="the VAD's hangover (PARLEY_VAD_STOP_SECS)"
    )
    parser.add_argument("--per-turn", action="store_true", help="also print each turn's stages")
    args = parser.parse_args()
    asyncio.run(bench(args.turns, args.stop_secs, args.per_turn))


if __name__ == "__main__":
    main()
