"""VoiceCall: the streaming voice pipeline of one call, and the owner of all its tasks.

    transport --push(16 kHz PCM)--> inbox --listener--> VADStream --speech_end--> utterance queue
    utterance queue --transcriber: STT, one at a time--> transcript(s) --> VoiceReply
    VoiceReply (voice/turns.py): session turn -> sentences -> TTS -> Playout
    transport <--read_frame() every 20 ms-- Playout (48 kHz)

Turn-taking lives here. Every utterance is cut from the input once, at its speech end, and
transcribed once, in order, by one transcriber task (on a CPU-bound local model two runs side by
side would only slow both down). Speech-to-text may be slower than the user: speech that starts
while an earlier utterance is still being transcribed does not touch it (its audio is never sent
to STT again). A transcript becomes a turn only once the user has stopped: while they are speaking
again, or a later utterance waits for STT, it is held, and the held transcripts are joined as text
into one turn when the last of them is in (the user paused and went on before being answered).
Speech that starts while a reply exists (the model is writing or its audio plays) is a barge-in:
the queued audio is dropped first (synchronously, so the transport's next frame is silence), then
the reply task is cancelled (which cancels the LLM stream through the session and closes the TTS
stream), and the session keeps as the reply only the text of the audio that was played. The
server has no echo canceller: it relies on the browser's `echoCancellation`, so the assistant's
own voice does not come back as a barge-in.

The call's stage (`call_stage` events: listening, transcribing, thinking, speaking) follows from
that state and is sent whenever it changes, so a slow stage shows as itself in the call bar.

Events go out through one outbox task in order: to the transport's callback (the data channel),
and the call's own events also over the session's bus, so the session's WebSockets see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Any

from parley import metrics
from parley.audio.pcm import SAMPLE_WIDTH
from parley.config import Settings
from parley.providers.stt import STTProvider, Transcript
from parley.providers.tts import TTSProvider
from parley.providers.vad import SAMPLE_RATE, SpeechModel, VADEvent
from parley.sessions import events as session_events
from parley.sessions.events import Event
from parley.sessions.keys import public_id
from parley.sessions.registry import SessionRegistry
from parley.sessions.turn import Turn
from parley.voice import events
from parley.voice.call import deliver, spawn_owned
from parley.voice.playout import Playout
from parley.voice.turns import (
    ReplyContext,
    ReplyPhase,
    Timings,
    Utterance,
    VoiceReply,
    public_error,
    transcribe,
)
from parley.voice.vad_stream import VADStream

log = logging.getLogger("parley.voice")

#: input the listener may fall behind by before the oldest audio is dropped (an overloaded loop)
MAX_INBOX_SECONDS = 10.0
#: the longest utterance sent to speech-to-text (less when PARLEY_MAX_AUDIO_SECONDS is lower)
MAX_UTTERANCE_SECS = 60.0


@dataclass(slots=True, frozen=True)
class VoiceConfig:
    threshold: float = 0.5
    start_secs: float = 0.2
    stop_secs: float = 0.2
    #: audio kept before the VAD's speech edge: Silero rises a little after the first phoneme
    preroll_secs: float = 0.3
    #: audio kept after the speech edge, so a trailing consonant is not clipped
    tail_secs: float = 0.1
    max_utterance_secs: float = MAX_UTTERANCE_SECS
    first_clause_chars: int = 40
    stt_language: str | None = None
    tts_voice: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> VoiceConfig:
        return cls(
            threshold=settings.vad_threshold,
            start_secs=settings.vad_start_secs,
            stop_secs=settings.vad_stop_secs,
            stt_language=settings.stt_language,
            tts_voice=settings.tts_voice,
            # A call's utterances go to the same speech-to-text as uploads, under the same limit.
            max_utterance_secs=min(MAX_UTTERANCE_SECS, settings.max_audio_seconds),
        )


class CallState(Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class CallStage(Enum):
    """What the call is doing for the user now (the `call_stage` event; the call bar shows it)."""

    LISTENING = "listening"  # waiting for speech, or hearing it
    TRANSCRIBING = "transcribing"  # speech-to-text has an utterance
    THINKING = "thinking"  # a turn exists and none of its audio has played yet
    SPEAKING = "speaking"  # the reply's audio is going out


@dataclass(slots=True, frozen=True)
class BargeIn:
    """One interruption, for measurements: when the VAD decided and when the audio was dropped."""

    decided_at: float
    flushed_at: float
    heard: str
    turn_id: str | None


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:20]


class VoiceCall:
    """One per call. `start()`, then `push()` input and `read_frame()` output; `aclose()` at the end.

    `model` must be fresh for this call (`SpeechModel.fresh()`); it is scored in a worker thread
    when more than a couple of frames are waiting.
    """

    def __init__(
        self,
        session_key: str,
        *,
        sessions: SessionRegistry,
        model: SpeechModel,
        stt: STTProvider,
        tts: TTSProvider,
        config: VoiceConfig | None = None,
        on_event: Callable[[Event], None] | None = None,
        call_id: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.id = call_id or new_call_id()
        #: the session's key (`<owner>/<id>`) and the id its events carry
        self.session_key = session_key
        self.session_id = public_id(session_key)
        self.config = config = config or VoiceConfig()
        self._sessions = sessions
        self._on_event = on_event
        self._clock = clock
        self.state = CallState.NEW
        self.vad = VADStream(
            model, threshold=config.threshold, start_secs=config.start_secs, stop_secs=config.stop_secs
        )
        self.playout = Playout(on_started=self._on_first_frame, clock=clock)
        self._ctx = ReplyContext(
            call_id=self.id,
            session_key=session_key,
            sessions=sessions,
            stt=stt,
            tts=tts,
            playout=self.playout,
            emit=self._emit,
            stt_language=config.stt_language,
            tts_voice=config.tts_voice,
            first_clause_chars=config.first_clause_chars,
            clock=clock,
        )
        self._inbox: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        self._inbox_bytes = 0
        self._outbox: asyncio.Queue[tuple[Event, bool]] = asyncio.Queue()
        # Input audio of the current utterance (and a pre-roll before it), on the VAD's clock.
        self._audio = bytearray()
        self._audio_from = 0.0  # stream seconds of self._audio[0]
        self._fed = 0.0  # stream seconds pushed into the VAD
        self._fed_clock = 0.0  # when that audio arrived
        self._utterance_start: float | None = None  # set while the user speaks
        # Utterances waiting for STT, and the one transcriber (started by the first utterance).
        self._utterances: asyncio.Queue[Utterance] = asyncio.Queue()
        self._transcriber: asyncio.Task[None] | None = None
        self._transcribing = False
        # Transcripts not answered yet because the user went on speaking, with their timings.
        self._held: list[tuple[Transcript, Timings]] = []
        self._stage = CallStage.LISTENING
        self._reply: VoiceReply | None = None
        self._interrupting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.barge_ins: list[BargeIn] = []

    # -- the transport's side -----------------------------------------------------------------

    def start(self) -> None:
        if self.state is not CallState.NEW:
            raise RuntimeError(f"call {self.id} is {self.state.value}, not new")
        self.state = CallState.OPEN
        metrics.active_calls.inc()
        metrics.calls_total.inc()
        self._spawn(self._listen(), "voice-listen")
        self._spawn(self._deliver(), "voice-events")

    def push(self, pcm: bytes) -> None:
        """16 kHz mono s16le input as it arrives (any size); never blocks."""
        if self.state is not CallState.OPEN or not pcm:
            return
        self._inbox.put_nowait((pcm, self._clock()))
        self._inbox_bytes += len(pcm)
        while self._inbox_bytes > MAX_INBOX_SECONDS * SAMPLE_RATE * SAMPLE_WIDTH:
            dropped, _ = self._inbox.get_nowait()
            self._inbox_bytes -= len(dropped)
            log.warning("voice call=%s is behind its input; dropped %d bytes", self.id, len(dropped))

    def read_frame(self) -> bytes | None:
        """The next 20 ms of 48 kHz output, or None for silence."""
        return self.playout.read_frame()

    async def answer_text(self, text: str, language: str | None = None) -> bool:
        """Answer `text` aloud as if it had been heard (a device's typed text or wake word).

        A reply under way is interrupted first, and its history edit lands before the new turn.
        False when the call is not open or the session refused the turn (an `error` event said why).
        """
        if self.state is not CallState.OPEN:
            return False
        if self.responding:
            self._barge_in(self._clock())
        await self._settle_interrupt()
        now = self._clock()
        self._held.append((Transcript(text=text, language=language), Timings(speech_end=now, decided=now)))
        self._answer_held()
        self._update_stage()
        return self._reply is not None

    def interrupt(self) -> bool:
        """Stop the reply now, as a barge-in does (a device's `abort`); False when none was under way."""
        if self.state is not CallState.OPEN or not self.responding:
            return False
        self._barge_in(self._clock())
        return True

    @property
    def responding(self) -> bool:
        """A reply is being written or spoken (speech now would be a barge-in)."""
        reply = self._reply
        return self.playout.playing or (reply is not None and reply.phase is ReplyPhase.RESPONDING)

    async def aclose(self) -> None:
        """Cancel every task and drop every buffer; a reply being spoken is kept as heard so far."""
        if self.state is CallState.CLOSED:
            return
        was_open = self.state is CallState.OPEN
        self.state = CallState.CLOSED
        reply = self._reply
        # Hung up mid-reply: history keeps what was heard, as for a barge-in.
        unfinished = reply is not None and reply.phase is ReplyPhase.RESPONDING
        heard = self.playout.flush()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if unfinished and reply is not None and reply.turn is not None:
            with contextlib.suppress(Exception):
                await self._sessions.get(self.session_key).interrupt(reply.turn, heard)
        self._reply = None
        self._audio.clear()
        self._held.clear()
        while not self._utterances.empty():
            self._utterances.get_nowait()
        while not self._inbox.empty():
            self._inbox.get_nowait()
        while not self._outbox.empty():
            self._outbox.get_nowait()
        if was_open:
            metrics.active_calls.dec()

    # -- input: VAD and turn-taking -----------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            pcm, arrived = await self._inbox.get()
            pieces = [pcm]
            while not self._inbox.empty():  # batch what piled up: one thread hop, not many
                more, arrived = self._inbox.get_nowait()
                pieces.append(more)
            pcm = b"".join(pieces)
            self._inbox_bytes -= len(pcm)
            self._keep_audio(pcm)
            self._fed += len(pcm) / SAMPLE_WIDTH / SAMPLE_RATE
            self._fed_clock = arrived
            try:
                found = await self.vad.feed_async(pcm)
            except Exception as exc:  # a broken model must not end the call silently
                log.exception("voice activity detection failed call=%s", self.id)
                self._emit(
                    events.error(self.session_id, self.id, "vad", public_error({"error": str(exc)})), True
                )
                continue
            for event in found:
                if event.kind == "speech_start":
                    self._on_speech_start(event)
                else:
                    self._on_speech_end(event)

    def _wall(self, at: float) -> float:
        """The clock time a stream instant arrived at (input comes in real time)."""
        return self._fed_clock - (self._fed - at)

    def _on_speech_start(self, event: VADEvent) -> None:
        decided = self._clock()
        self._emit(events.user_started_speaking(self.session_id, self.id, event.at), True)
        # An utterance still in STT is left alone: this speech is an utterance of its own.
        self._utterance_start = max(self._audio_from, event.at - self.config.preroll_secs)
        if self.responding:
            self._barge_in(decided)

    def _on_speech_end(self, event: VADEvent) -> None:
        decided = self._clock()
        self._emit(events.user_stopped_speaking(self.session_id, self.id, event.at), True)
        start = self._utterance_start if self._utterance_start is not None else event.at
        self._utterance_start = None
        pcm = self._cut(start, min(self._fed, event.at + self.config.tail_secs))
        timings = Timings(speech_end=self._wall(event.at), decided=decided)
        self._utterances.put_nowait(Utterance(pcm, timings))
        if self._transcriber is None:
            # Started here rather than in start(): a call nobody speaks in has no STT task.
            self._transcriber = self._spawn(self._transcribe_utterances(), "voice-stt")
        self._update_stage()

    def _user_went_on(self) -> bool:
        """The user is speaking again, or a later utterance waits for STT."""
        return self._utterance_start is not None or not self._utterances.empty()

    async def _transcribe_utterances(self) -> None:
        """Each utterance once, in order; transcripts become a turn once the user has stopped."""
        while True:
            utterance = await self._utterances.get()
            self._transcribing = True
            self._update_stage()
            try:
                transcript = await transcribe(self._ctx, utterance)
            except Exception as exc:  # a provider's bug must not end this call's STT for good
                log.exception("speech-to-text crashed call=%s", self.id)
                self._emit(
                    events.error(self.session_id, self.id, "stt", public_error({"error": str(exc)})), True
                )
                transcript = None
            finally:
                self._transcribing = False
            if transcript is not None and transcript.text:
                self._held.append((transcript, utterance.timings))
            elif transcript is not None and not self._held:
                metrics.turns_total.labels("no_speech").inc()
            if self._held and not self._user_went_on():
                # A barge-in's history edit must land before the next turn is queued.
                await self._settle_interrupt()
                if not self._user_went_on():  # checked again: speech may have started meanwhile
                    self._answer_held()
            self._update_stage()

    def _answer_held(self) -> None:
        """One turn for the held transcripts, joined as text (never their audio again)."""
        held, self._held = self._held, []
        text = " ".join(transcript.text for transcript, _ in held)
        language = next((t.language for t, _ in reversed(held) if t.language), None)
        if len(held) > 1:
            log.info("voice call=%s joined %d transcripts into one turn", self.id, len(held))
        # Timed from the last utterance: its end is what the user waits from.
        reply = VoiceReply(self._ctx, text, language, held[-1][1])
        if not reply.submit():
            return
        self._reply = reply
        reply.task = self._spawn(self._run_reply(reply), "voice-reply")

    async def _run_reply(self, reply: VoiceReply) -> None:
        try:
            await reply.run()
        finally:
            self._update_stage()

    def _barge_in(self, decided: float) -> None:
        reply = self._reply
        heard = self.playout.flush()  # first: the transport's next frame is silence
        flushed = self._clock()
        turn = reply.turn if reply is not None else None
        speaking = reply is not None and reply.speaking
        self._cancel_reply()
        self.barge_ins.append(BargeIn(decided, flushed, heard, turn.id if turn else None))
        metrics.barge_in_seconds.observe(flushed - decided)
        metrics.turns_total.labels("interrupted").inc()
        if turn is not None:
            if speaking:
                self._emit(
                    events.assistant_stopped_speaking(self.session_id, self.id, turn.id, interrupted=True),
                    True,
                )
            log.info("voice barge-in call=%s turn=%s heard=%d chars", self.id, turn.id, len(heard))
            self._interrupting = self._spawn(self._interrupt(turn, heard), "voice-interrupt")
        self._update_stage()

    async def _interrupt(self, turn: Turn, heard: str) -> None:
        session = self._sessions.get(self.session_key)
        await session.interrupt(turn, heard)
        with contextlib.suppress(Exception):
            await turn.done
        if turn.reply is not None:
            # The session published `interrupted` on its bus; the call's client gets it here.
            self._emit(session_events.interrupted(self.session_id, turn.reply), False)

    async def _settle_interrupt(self) -> None:
        task = self._interrupting
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _cancel_reply(self) -> None:
        reply, self._reply = self._reply, None
        if reply is not None and reply.task is not None:
            reply.task.cancel()

    def _on_first_frame(self, at: float) -> None:
        if self._reply is not None:
            self._reply.on_first_frame(at)
            self._update_stage()

    # -- the stage shown to the user ----------------------------------------------------------

    def _stage_now(self) -> CallStage:
        reply = self._reply
        if reply is not None and reply.phase is ReplyPhase.RESPONDING:
            return CallStage.SPEAKING if reply.speaking else CallStage.THINKING
        if self._transcribing or not self._utterances.empty():
            return CallStage.TRANSCRIBING
        return CallStage.LISTENING

    def _update_stage(self) -> None:
        """Send `call_stage` when the stage changed; called after every change of its inputs."""
        stage = self._stage_now()
        if stage is not self._stage:
            self._stage = stage
            self._emit(events.call_stage(self.session_id, self.id, stage.value), True)

    # -- the utterance buffer -----------------------------------------------------------------

    def _keep_audio(self, pcm: bytes) -> None:
        self._audio += pcm
        if not self.vad.speaking:
            # Silence: keep only what a speech start can reach back to (its start delay + pre-roll)
            # before this chunk, which the VAD has yet to score: after a stall of the loop it can
            # hold seconds of input, speech included.
            reach = self.config.start_secs + self.config.preroll_secs + 0.5
            keep = len(pcm) / SAMPLE_WIDTH / SAMPLE_RATE + reach
        else:
            keep = self.config.max_utterance_secs
        excess = len(self._audio) // SAMPLE_WIDTH - int((keep + 1.0) * SAMPLE_RATE)
        if excess > 0:  # trimmed a second at a time, not on every frame
            del self._audio[: excess * SAMPLE_WIDTH]
            self._audio_from += excess / SAMPLE_RATE

    def _cut(self, start: float, end: float) -> bytes:
        first = max(0, round((start - self._audio_from) * SAMPLE_RATE)) * SAMPLE_WIDTH
        last = max(first, round((end - self._audio_from) * SAMPLE_RATE) * SAMPLE_WIDTH)
        return bytes(self._audio[first:last])

    # -- events -------------------------------------------------------------------------------

    def notify(self, event: Event) -> None:
        """A transport's own event (e.g. the SFU track moved), sent in order with the call's."""
        self._emit(event, True)

    def _emit(self, event: Event, publish: bool) -> None:
        if self.state is not CallState.CLOSED:
            self._outbox.put_nowait((event, publish))

    async def _deliver(self) -> None:
        def publish(event: Event) -> Awaitable[str]:
            # the live session of the moment, as each event is sent (a registry may remake it)
            return self._sessions.get(self.session_key).publish(event)

        await deliver(self._outbox, self._on_event, publish, call_id=self.id)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return spawn_owned(self._tasks, coro, f"{name}:{self.id}")
