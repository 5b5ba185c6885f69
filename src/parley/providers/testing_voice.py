"""Speech providers with fixed, known latency and output, for tests, benchmarks and demos.

Like `EchoChat` they are real providers (they honour cancellation and raise `ProviderError`s),
only their "models" are trivial:

- `FixedLatencySTT` answers after `delay` with a fixed text, or with what a function makes of the
  recording (which may raise to play a failing service).
- `GatedSTT` answers each recording only when the caller says what it heard: speech-to-text as
  slow as a test needs, with no clock involved.
- `FixedLatencyTTS` sends its first audio after `first_byte` and then real PCM: a tone whose
  length follows the text (`secs_per_char`), so the time played maps back to characters, which
  is what a barge-in's "what was heard" is measured against.
"""

from __future__ import annotations

import asyncio
import io
import math
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from parley.errors import ProviderError
from parley.providers.stt import AudioInput, STTProvider, Transcript
from parley.providers.tts import AudioChunk, TTSProvider


class FixedLatencySTT(STTProvider):
    name = "fixed-latency"
    model = "fixed"

    def __init__(
        self,
        *,
        delay: float = 0.1,
        text: str | Callable[[AudioInput], str] = "hello",
        language: str | None = "en",
    ) -> None:
        self.delay = delay
        self.text = text
        self.language = language
        #: every recording received, in order (tests check what the pipeline cut out)
        self.calls: list[AudioInput] = []

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        self.calls.append(audio)
        await asyncio.sleep(self.delay)
        text = self.text(audio) if callable(self.text) else self.text
        return Transcript(text=text, language=language or self.language)


@dataclass(slots=True, eq=False)
class PendingTranscription:
    """One recording a `GatedSTT` holds until `answer()` or `fail()`."""

    audio: AudioInput = field(repr=False)
    #: the recording's length, read from its WAV header
    seconds: float
    _result: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def answer(self, text: str) -> None:
        if not self._result.done():
            self._result.set_result(text)

    def fail(self, error: ProviderError) -> None:
        if not self._result.done():
            self._result.set_exception(error)

    @property
    def cancelled(self) -> bool:
        """The caller gave up on this transcription (its task was cancelled)."""
        return self._result.cancelled()


class GatedSTT(STTProvider):
    """Holds every recording until the test answers it: `await next_call()`, then `answer(text)`."""

    name = "gated"
    model = "gated"

    def __init__(self, *, language: str | None = "en") -> None:
        self.language = language
        #: every recording received, in order
        self.calls: list[PendingTranscription] = []
        self._arrived: asyncio.Queue[PendingTranscription] = asyncio.Queue()

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        with wave.open(io.BytesIO(audio.data)) as recording:
            seconds = recording.getnframes() / recording.getframerate()
        pending = PendingTranscription(audio, seconds)
        self.calls.append(pending)
        self._arrived.put_nowait(pending)
        text = await pending._result
        return Transcript(text=text, language=language or self.language)

    async def next_call(self) -> PendingTranscription:
        """The next recording received (at once if one came in already)."""
        return await self._arrived.get()

    @property
    def seconds(self) -> list[float]:
        """The length of every recording received, in order."""
        return [call.seconds for call in self.calls]


class FixedLatencyTTS(TTSProvider):
    name = "fixed-latency"
    voice = "tone"

    def __init__(
        self,
        *,
        first_byte: float = 0.1,
        sample_rate: int = 24000,
        secs_per_char: float = 0.06,
        chunk_secs: float = 0.2,
        frequency: float = 220.0,
        error: ProviderError | None = None,
    ) -> None:
        self.first_byte = first_byte
        self.sample_rate = sample_rate
        self.secs_per_char = secs_per_char
        self.chunk_secs = chunk_secs
        self.frequency = frequency
        #: raised instead of any audio while set (a failing service); clear it to recover
        self.error = error
        self.texts: list[str] = []

    def duration(self, text: str) -> float:
        """Seconds of audio `text` becomes."""
        return len(text) * self.secs_per_char

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        self.texts.append(text)
        await asyncio.sleep(self.first_byte)
        if self.error is not None:
            raise self.error
        total = round(self.duration(text) * self.sample_rate)
        step = max(1, round(self.chunk_secs * self.sample_rate))
        for start in range(0, total, step):
            yield AudioChunk(self._tone(start, min(total, start + step)), self.sample_rate)

    def _tone(self, start: int, end: int) -> bytes:
        import numpy as np

        t = np.arange(start, end) / self.sample_rate
        wave = 0.3 * 32767 * np.sin(2 * math.pi * self.frequency * t)
        return wave.astype("<i2").tobytes()
