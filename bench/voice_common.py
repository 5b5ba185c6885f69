"""The voice benchmark's scenario, shared by Parley's side (`voice.py`) and pipecat's
(`pipecat_voice.py`, run in its own virtualenv): so stdlib and numpy only, nothing from parley.

One caller's microphone, in 20 ms frames at 16 kHz: faint noise throughout, and every `PERIOD`
seconds the same espeak-ng utterance, placed so that its last non-zero sample ends exactly on a
frame boundary. The true end of speech is therefore the moment the frame holding that sample is
delivered, on both sides, with no VAD involved in knowing it.

Providers (issue 4): STT answers 100 ms after the utterance is handed over; the LLM's first token
comes 200 ms after the request and then one token every 1/30 s; TTS sends its first audio 100 ms
after each sentence. The reply is "You said: " + the transcript, one word per token.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import time
import wave
from dataclasses import asdict, dataclass, field
from io import BytesIO

import numpy as np

RATE = 16000
FRAME = 320  # 20 ms
FRAME_SECS = FRAME / RATE
NOISE = 0.003 * 32767

UTTERANCE = "hello there how are you today"
TRANSCRIPT = "Hello there. How are you today?"
REPLY = f"You said: {TRANSCRIPT}"
STT_DELAY = 0.1
FIRST_TOKEN = 0.2
TOKEN_INTERVAL = 1 / 30
TTS_FIRST_BYTE = 0.1
TTS_SECS_PER_CHAR = 0.02  # short reply audio, so turns can follow each other quickly
STOP_SECS = 0.2
LEAD_SECS = 0.6  # noise before the first utterance
GAP_SECS = 2.4  # noise after each utterance: room for the reply (~0.9 s + ~0.8 s of audio)
STAGGER_SECS = 1.0  # concurrent calls start spread over this much time
#: a reply frame is audible above this RMS (the test tone's is ~7000, the mic noise ~100)
AUDIBLE_RMS = 1000.0


def reply_tokens() -> list[str]:
    words = REPLY.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def first_sentence_tokens() -> int:
    """Tokens up to and including the one that ends the first sentence."""
    for i, token in enumerate(reply_tokens()):
        if token.rstrip().endswith((".", "!", "?")):
            return i + 1
    return len(reply_tokens())


def provider_ms() -> float:
    """The providers' share of one turn: STT + first token + the first sentence's remaining
    tokens at 30/s + TTS first byte."""
    tokens = (first_sentence_tokens() - 1) * TOKEN_INTERVAL
    return (STT_DELAY + FIRST_TOKEN + tokens + TTS_FIRST_BYTE) * 1000


def speech(text: str = UTTERANCE) -> np.ndarray:
    """espeak-ng saying `text`, 16 kHz mono int16, cut to its first and last non-zero sample."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run(
        [espeak, "-v", "en-us", "-s", "170", "--stdout", text], capture_output=True, check=True
    ).stdout
    with wave.open(BytesIO(wav)) as reader:
        rate, pcm = reader.getframerate(), reader.readframes(reader.getnframes())
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if rate != RATE:  # espeak-ng writes 22050 Hz: linear interpolation is plenty for a VAD
        t = np.arange(0, len(samples) / rate, 1 / RATE)
        samples = np.interp(t, np.arange(len(samples)) / rate, samples)
    out = samples.astype("<i2")
    voiced = np.flatnonzero(out)
    return out[voiced[0] : voiced[-1] + 1]


@dataclass(slots=True, frozen=True)
class Timeline:
    """One caller's input: `frames` 20 ms frames, and the frame index after which each utterance
    has ended (the frame holding its last sample is `end - 1`)."""

    pcm: bytes
    ends: tuple[int, ...]

    @property
    def frames(self) -> int:
        return len(self.pcm) // (FRAME * 2)

    def frame(self, index: int) -> bytes:
        return self.pcm[index * FRAME * 2 : (index + 1) * FRAME * 2]


def timeline(voice: np.ndarray, turns: int, seed: int) -> Timeline:
    lead = int(LEAD_SECS * RATE)
    lead += (-(lead + len(voice))) % FRAME  # the speech ends on a frame boundary
    gap = int(GAP_SECS * RATE)
    gap += (-(len(voice) + gap)) % FRAME
    parts, ends, at = [np.zeros(lead)], [], lead
    for _ in range(turns):
        parts += [voice.astype(np.float64), np.zeros(gap)]
        ends.append((at + len(voice)) // FRAME)
        at += len(voice) + gap
    audio = np.concatenate(parts)
    audio += np.random.default_rng(seed).normal(0.0, NOISE, len(audio))
    return Timeline(np.clip(audio, -32768, 32767).astype("<i2").tobytes(), tuple(ends))


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def cpu_seconds() -> float:
    """This process's user + system CPU time, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(slots=True)
class Run:
    """The turns of one measurement (one system, one transport, one number of calls), in ms."""

    system: str
    calls: int
    latency: list[float] = field(default_factory=list)  # true end of speech -> first reply audio
    vad: list[float] = field(default_factory=list)  # true end of speech -> the VAD's stop decision
    missed: int = 0  # turns without a reply audio in their window
    cpu_s: float = 0.0
    wall_s: float = 0.0
    call_s: float = 0.0  # seconds of call summed over calls
    extra: dict[str, list[float]] = field(default_factory=dict)

    def cpu_share(self) -> float:
        """Fraction of one core per call (CPU seconds per call-second)."""
        return self.cpu_s / self.call_s if self.call_s else math.nan

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Run:
        return cls(**json.loads(text))


def schedule(start: float, index: int) -> float:
    """When frame `index` of a call that starts at `start` is captured and sent."""
    return start + (index + 1) * FRAME_SECS


async def sleep_until(at: float) -> None:
    import asyncio

    await asyncio.sleep(max(0.0, at - time.perf_counter()))
