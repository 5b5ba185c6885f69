"""One spoken exchange: an utterance -> transcript -> a turn of the session -> the reply spoken.

`transcribe()` turns one utterance into text; the call runs it once per utterance, in order (see
voice/pipeline.py for how transcripts become turns). `VoiceReply` is the unit a barge-in cancels:
it runs as one task owned by the call, with one child task (the speaker) so that synthesis of
chunk N+1 overlaps the playback of chunk N and the LLM stream is never blocked on TTS:

    utterance --STT--> transcript(s) --submit--> ChatSession turn --chunk events--> SentenceChunker
        --sentences queue--> speaker: TTS per sentence --resample--> Playout (48 kHz frames)

The text side is the session's own turn (same history, same broadcast), so this module never
stores or publishes the reply; it forwards the turn's events to the call's client and measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from parley import metrics
from parley.audio.encode import encode_wav
from parley.audio.pcm import SAMPLE_WIDTH
from parley.errors import ParleyError, ProviderError
from parley.providers.stt import AudioInput, STTProvider, Transcript
from parley.providers.tts import AudioChunk, TTSProvider
from parley.providers.vad import SAMPLE_RATE
from parley.redact import without_paths
from parley.sessions.events import Event
from parley.sessions.keys import public_id
from parley.sessions.registry import SessionRegistry
from parley.sessions.turn import Turn
from parley.voice import events
from parley.voice.playout import Playout, Resampler, Segment
from parley.voice.sentences import SentenceChunker

log = logging.getLogger("parley.voice")

#: emit(event, publish): publish=True also sends it over the session's bus
Emit = Callable[[Event, bool], None]


class ReplyPhase(Enum):
    RESPONDING = "responding"  # a turn of the session exists: more speech is a barge-in
    DONE = "done"


@dataclass(slots=True)
class Timings:
    """perf_counter instants of one turn's stages; `speech_end` is the VAD's edge, in wall time."""

    speech_end: float
    decided: float
    #: when STT took the utterance up: later than `decided` when an earlier one was still in STT
    stt_started: float | None = None
    transcript: float | None = None
    submitted: float | None = None
    first_token: float | None = None
    first_chunk: float | None = None
    first_tts_audio: float | None = None
    first_frame: float | None = None

    def stages_ms(self) -> dict[str, float]:
        """Milliseconds from the end of speech to each stage reached (the `metrics` event)."""
        stages = {
            "vad": self.decided,
            "transcript": self.transcript,
            "first_token": self.first_token,
            "first_tts_audio": self.first_tts_audio,
            "first_frame": self.first_frame,
        }
        return {k: round((v - self.speech_end) * 1000, 1) for k, v in stages.items() if v is not None}

    def durations_ms(self) -> dict[str, float]:
        """How long each provider took: what is not the server's own overhead."""
        spans = {
            "stt": (self.stt_started or self.decided, self.transcript),
            "llm_first_token": (self.submitted, self.first_token),
            "llm_first_chunk": (self.submitted, self.first_chunk),
            "tts_first_audio": (self.first_chunk, self.first_tts_audio),
        }
        return {k: round((b - a) * 1000, 1) for k, (a, b) in spans.items() if a is not None and b is not None}


@dataclass(slots=True)
class ReplyContext:
    """What a reply needs from its call (passed down, so this module does not know the call)."""

    call_id: str
    #: the session's key (`<owner>/<id>`): what the registry knows it by
    session_key: str
    sessions: SessionRegistry
    stt: STTProvider
    tts: TTSProvider
    playout: Playout
    emit: Emit
    stt_language: str | None = None
    tts_voice: str | None = None
    first_clause_chars: int = 40
    clock: Callable[[], float] = time.perf_counter

    @property
    def session_id(self) -> str:
        """The id the session's events carry."""
        return public_id(self.session_key)


@dataclass(slots=True, eq=False)
class Utterance:
    """One stretch of speech, cut from the input once at its end: what STT is given, once."""

    pcm: bytes
    timings: Timings

    @property
    def seconds(self) -> float:
        return len(self.pcm) / SAMPLE_WIDTH / SAMPLE_RATE


async def transcribe(ctx: ReplyContext, utterance: Utterance) -> Transcript | None:
    """The utterance's transcript (also sent as a `transcript` event), or None when STT failed."""
    utterance.timings.stt_started = ctx.clock()
    try:
        transcript = await ctx.stt.transcribe(
            AudioInput(wav_bytes(utterance.pcm), "audio/wav", "utterance.wav"), language=ctx.stt_language
        )
    except ParleyError as exc:
        report_failure(ctx, "stt", exc)
        return None
    utterance.timings.transcript = ctx.clock()
    text = transcript.text.strip()
    ctx.emit(events.transcript(ctx.session_id, ctx.call_id, text, transcript.language), True)
    return Transcript(text=text, language=transcript.language)


@dataclass(slots=True, eq=False)
class VoiceReply:
    """The reply to `text` (one or more transcripts): `submit()` queues the turn, `run()` speaks it."""

    ctx: ReplyContext
    text: str
    language: str | None
    timings: Timings
    phase: ReplyPhase = ReplyPhase.RESPONDING
    turn: Turn | None = None
    speaking: bool = False
    task: asyncio.Task[None] | None = None
    _feed: asyncio.Queue[Event | None] | None = field(default=None)
    _tts_failed: bool = field(default=False)
    _voiced: bool = field(default=False)  # audio above the lead level has been played
    _lead_cut: float = field(default=0.0)  # seconds of leading silence not played

    def submit(self) -> bool:
        """Queue the session turn now; False (and an `error` event) when the session refused it.

        Synchronous, so nothing the call does (a speech start) can come between the decision to
        answer and the turn existing.
        """
        ctx = self.ctx
        try:
            turn = ctx.sessions.get(ctx.session_key).submit(self.text, source="voice", language=self.language)
        except ParleyError as exc:  # Busy: the session's queue is full
            self._fail("turn", exc)
            self.phase = ReplyPhase.DONE
            return False
        self._feed = turn.watch()
        self.turn = turn
        self.timings.submitted = ctx.clock()
        return True

    async def run(self) -> None:
        try:
            if self.turn is not None and self._feed is not None:
                await self._respond(self.turn, self._feed)
        finally:
            self.phase = ReplyPhase.DONE

    def on_first_frame(self, at: float) -> None:
        """Called by the playout when this reply's first frame goes out: the stage users hear."""
        ctx, t = self.ctx, self.timings
        t.first_frame = at
        self.speaking = True
        if self.turn is not None:
            ctx.emit(events.assistant_started_speaking(ctx.session_id, ctx.call_id, self.turn.id), True)
        stages, providers = t.stages_ms(), t.durations_ms()
        turn_id = self.turn.id if self.turn else None
        ctx.emit(events.metrics(ctx.session_id, ctx.call_id, turn_id, stages, providers), True)
        metrics.observe_turn(stages)
        log.info(
            "voice turn session=%s call=%s turn=%s %s %s",
            ctx.session_id,
            ctx.call_id,
            self.turn.id if self.turn else "-",
            " ".join(f"{k}_ms={v}" for k, v in stages.items()),
            " ".join(f"{k}_ms={v}" for k, v in providers.items()),
        )

    # -- the stages ---------------------------------------------------------------------------

    async def _respond(self, turn: Turn, feed: asyncio.Queue[Event | None]) -> None:
        ctx = self.ctx
        ctx.playout.start_turn()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(sentences, self.language), name=f"voice-tts:{turn.id}")
        outcome = "complete"
        try:
            chunker = SentenceChunker(first_clause_chars=ctx.first_clause_chars)
            while (event := await feed.get()) is not None:
                ctx.emit(event, False)  # the session already published it on the bus
                if event.type == "chunk":
                    if self.timings.first_token is None:
                        self.timings.first_token = ctx.clock()
                    for sentence in chunker.feed(_text_of(event)):
                        self._queue_sentence(sentences, sentence)
                elif event.type in ("cancelled", "error"):
                    outcome = "cancelled" if event.type == "cancelled" else "failed"
            if outcome == "complete":
                for sentence in chunker.flush():
                    self._queue_sentence(sentences, sentence)
                sentences.put_nowait(None)
                await speaker
                await ctx.playout.wait_drained()
            else:
                # Stopped from another tab, or the model failed: go quiet now.
                speaker.cancel()
                ctx.playout.flush()
        finally:
            speaker.cancel()
            await asyncio.gather(speaker, return_exceptions=True)
        metrics.turns_total.labels(outcome).inc()
        if self.speaking:
            self.speaking = False
            ctx.emit(
                events.assistant_stopped_speaking(ctx.session_id, ctx.call_id, turn.id, interrupted=False),
                True,
            )

    def _queue_sentence(self, sentences: asyncio.Queue[str | None], sentence: str) -> None:
        if self.timings.first_chunk is None:
            self.timings.first_chunk = self.ctx.clock()
        sentences.put_nowait(sentence)

    async def _speak(self, sentences: asyncio.Queue[str | None], language: str | None) -> None:
        """Synthesise sentences in order; each plays while the next is made."""
        ctx = self.ctx
        while (text := await sentences.get()) is not None:
            if self._tts_failed or not any(ch.isalnum() for ch in text):
                continue  # after a failure the text still shows; code fences and dashes are not spoken
            segment = ctx.playout.begin(text)
            resampler = Resampler()
            stream = ctx.tts.synthesize(text, voice=ctx.tts_voice, language=language)
            try:
                async for chunk in stream:
                    self._play(segment, resampler, chunk)
                ctx.playout.write(segment, resampler.flush())
            except ParleyError as exc:
                self._tts_failed = True
                self._fail("tts", exc)
            finally:
                ctx.playout.end(segment)
                await _aclose(stream)

    def _play(self, segment: Segment, resampler: Resampler, chunk: AudioChunk) -> None:
        if self.timings.first_tts_audio is None:
            self.timings.first_tts_audio = self.ctx.clock()
        pcm = chunk.pcm
        if not self._voiced:
            # The reply's own leading silence is not worth waiting for; later sentences keep
            # theirs (it is the pause between them). A voice quieter than the level throughout
            # plays as it is once `LEAD_MAX_SECS` would have been cut.
            trimmed = trim_lead(pcm, chunk.sample_rate)
            self._lead_cut += (len(pcm) - len(trimmed)) / SAMPLE_WIDTH / chunk.sample_rate
            if self._lead_cut <= LEAD_MAX_SECS:
                pcm = trimmed
            if not pcm:
                return
            self._voiced = True
        self.ctx.playout.write(segment, resampler.convert(pcm, chunk.sample_rate))

    def _fail(self, stage: str, exc: ParleyError) -> None:
        report_failure(self.ctx, stage, exc)


def report_failure(ctx: ReplyContext, stage: str, exc: ParleyError) -> None:
    """A stage of the call failed: a log line, the error counter and an `error` event; the call goes on."""
    if not isinstance(exc, ProviderError):
        log.info("voice %s refused session=%s call=%s: %s", stage, ctx.session_id, ctx.call_id, exc)
    else:
        log.warning("voice %s failed session=%s call=%s: %s", stage, ctx.session_id, ctx.call_id, exc)
    metrics.errors_total.labels(stage).inc()
    ctx.emit(events.error(ctx.session_id, ctx.call_id, stage, public_error(exc.to_dict())), True)


#: an absolute file path on the server (two parts at least), not the path of a URL


def public_error(body: dict[str, Any]) -> dict[str, Any]:
    """An error's JSON for the call's client and the session's tabs: any server path in its
    message replaced (a model's folder, a cache file); the log line above keeps the full text."""
    text = body.get("error")
    if isinstance(text, str):
        body = {**body, "error": without_paths(text)}
    return body


#: the first sample of a reply's audio that counts as voice: 1% of full scale
LEAD_LEVEL = 328
#: kept before it, so the onset is not clipped
LEAD_KEEP_SECS = 0.01
#: at most this much of a reply's start is cut
LEAD_MAX_SECS = 0.3


def trim_lead(pcm: bytes, sample_rate: int) -> bytes:
    """`pcm` (s16le mono) from `LEAD_KEEP_SECS` before its first sample above `LEAD_LEVEL`; b""
    when it has none. Piper starts a sentence with 40-60 ms of near-silence: heard as latency."""
    import numpy as np

    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH], dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > LEAD_LEVEL)
    if not len(loud):
        return b""
    start = max(0, int(loud[0]) - int(LEAD_KEEP_SECS * sample_rate))
    return pcm[start * SAMPLE_WIDTH :]


def wav_bytes(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16 kHz mono PCM as a WAV file: what every STT provider accepts as an upload."""
    return encode_wav(pcm, sample_rate)


def _text_of(event: Event) -> str:
    text = json.loads(event.data).get("text", "")
    return text if isinstance(text, str) else ""


async def _aclose(stream: AsyncIterator[AudioChunk]) -> None:
    # Close the provider's generator now, not at garbage collection: a barge-in must stop the
    # synthesis process or HTTP stream at once.
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
