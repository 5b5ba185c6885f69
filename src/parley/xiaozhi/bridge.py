"""BridgeCall: a browser's voice call whose AI is a remote XiaoZhi server (PARLEY_VOICE_BACKEND=xiaozhi).

    transport --push(16 kHz PCM)--> OpusEncoder (60 ms) --> upstream socket (realtime mode)
                                \\-> VADStream (barge-in only)
    upstream --Opus--> OpusDecoder (48 kHz) --> Playout <--read_frame() every 20 ms-- transport
    upstream stt/tts sentence_start/tts stop --> a session turn whose reply is relayed (not modelled)

It has the surface the rtc peers use (voice/call.py), so a WebRTC call, direct or through
Cloudflare, runs over it unchanged. The server does the turn-taking: every input frame is sent in
realtime mode and the server's VAD ends each utterance. What it heard (`stt`) becomes the user
message of a turn of the call's session, and the sentences it speaks (`tts sentence_start`)
become that turn's reply, written through the session like a model's (`ChatSession.submit(...,
relay=...)`), so history, the bus and every other tab see a normal voice turn. `llm` carries an
emotion for a device's face; it is not text of the reply and is dropped.

Barge-in is decided here, with the call's own VAD: the browser cancels its echo, so speech while
the reply plays is the user's. The queued audio is dropped at once (the next frame is silence,
whatever the server does), `abort` goes upstream, and the session keeps as the reply the text of
what was played; downlink audio of the aborted reply that was already in flight is discarded
until the server's `tts stop`. The server is told `features.aec` too, so it keeps listening while
it speaks and the barge-in's own words reach it (a server that drops them still stops on abort).

The upstream socket is one per call. When it cannot be opened or closes, the call gets an
`error` event naming the server (a reply being relayed fails with it) and stays up; the next time
the user speaks (at most every `RECONNECT_SECONDS`), it connects again, with the input of the
last `PENDING_SECONDS` sent first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from parley import metrics
from parley.audio.pcm import SAMPLE_WIDTH
from parley.errors import ParleyError, ProviderError, ProviderUnavailable
from parley.providers.llm import ChatDelta
from parley.providers.vad import SpeechModel
from parley.sessions import events as session_events
from parley.sessions.events import Event
from parley.sessions.keys import public_id
from parley.sessions.registry import SessionRegistry
from parley.sessions.turn import Turn, TurnState
from parley.voice import events
from parley.voice.call import deliver, spawn_owned
from parley.voice.pipeline import MAX_INBOX_SECONDS, CallStage, CallState, VoiceConfig, new_call_id
from parley.voice.playout import FRAME_BYTES, OUT_RATE, Playout, Segment
from parley.voice.vad_stream import VADStream
from parley.xiaozhi.identity import Identity
from parley.xiaozhi.opus import UPLINK_RATE, OpusDecoder, OpusEncoder
from parley.xiaozhi.protocol import FRAME_MS
from parley.xiaozhi.upstream import FIELD, Alert, Emotion, Said, Speech, Upstream, UpstreamSocket

log = logging.getLogger("parley.xiaozhi")

#: input kept while the upstream is not connected, sent first once it is
PENDING_SECONDS = 2.0
PENDING_PACKETS = int(PENDING_SECONDS * 1000 / FRAME_MS)
#: the least time between two connection attempts
RECONNECT_SECONDS = 2.0
#: downlink audio held before a reply starts to play: the server paces its packets in real time,
#: so without one in hand every late packet is a gap. On loopback none is late (0 silent frames
#: in a reply with 0, 1 or 2); the second packet is margin for a remote server's network jitter,
#: and costs at most 60 ms before the first frame.
PREBUFFER_PACKETS = 2
STAGE = "upstream"


@dataclass(slots=True, frozen=True)
class BridgeBargeIn:
    """One barge-in, for measurements: when the VAD decided, the audio was dropped, abort went out,
    and the server's `tts stop` came back (None: it never did)."""

    decided_at: float
    flushed_at: float
    abort_sent_at: float | None
    heard: str
    stopped_at: float | None = None


@dataclass(slots=True, eq=False)
class _Reply:
    """One reply of the server: from its `stt` (or `tts start`) to `tts stop` and the playout drained."""

    turn: Turn | None
    #: the relay's text and its end (None), or the error that ends it
    relay: asyncio.Queue[str | ParleyError | None] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    sentences: int = 0
    segment: Segment | None = None
    stopped: bool = False  # `tts stop` came
    speaking: bool = False  # its first frame was played
    interrupted: bool = False
    task: asyncio.Task[None] | None = None
    heard_at: float | None = None  # perf_counter of the stt
    first_frame_at: float | None = None

    def end_relay(self, error: ParleyError | None = None) -> None:
        if not self.stopped:
            self.stopped = True
            self.relay.put_nowait(error)
            self.ended.set()

    def cut(self) -> None:
        """A barge-in: the relay is not ended (that would store the whole reply as complete); the
        session stops the turn, keeping what was heard."""
        self.stopped = True
        self.interrupted = True
        self.ended.set()


def uplink_encoder() -> OpusEncoder:
    """The call's 16 kHz input (what the transport pushes) -> 16 kHz Opus packets of exactly 60 ms."""
    return OpusEncoder(UPLINK_RATE, source_rate=UPLINK_RATE)


def downlink_decoder() -> OpusDecoder:
    """The server's packets, at whatever rate its hello announced -> 48 kHz PCM for the playout
    (libopus decodes any stream at any of its rates)."""
    return OpusDecoder(OUT_RATE)


async def _relayed(queue: asyncio.Queue[str | ParleyError | None]) -> AsyncIterator[ChatDelta]:
    while (item := await queue.get()) is not None:
        if isinstance(item, ParleyError):
            raise item
        yield ChatDelta(text=item)


class BridgeCall:
    """One per call, like VoiceCall: `start()`, `push()` and `read_frame()`, `aclose()` at the end."""

    def __init__(
        self,
        session_key: str,
        *,
        sessions: SessionRegistry,
        upstream: Upstream,
        model: SpeechModel,
        config: VoiceConfig | None = None,
        on_event: Callable[[Event], None] | None = None,
        call_id: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.id = call_id or new_call_id()
        self.session_key = session_key
        self.session_id = public_id(session_key)
        self.config = config = config or VoiceConfig()
        self.upstream = upstream
        self.state = CallState.NEW
        self._sessions = sessions
        self._on_event = on_event
        self._clock = clock
        self.vad = VADStream(
            model, threshold=config.threshold, start_secs=config.start_secs, stop_secs=config.stop_secs
        )
        self.playout = Playout(on_started=self._on_first_frame, clock=clock)
        self._encoder = uplink_encoder()
        self._decoder = downlink_decoder()
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._inbox_bytes = 0
        self._uplink: deque[bytes] = deque(maxlen=PENDING_PACKETS)
        self._uplink_ready = asyncio.Event()
        self._outbox: asyncio.Queue[tuple[Event, bool]] = asyncio.Queue()
        self._socket: UpstreamSocket | None = None
        self._identity: Identity | None = None
        self._wanted = asyncio.Event()  # the user spoke: worth connecting again
        self._reply: _Reply | None = None
        self._prebuffer = bytearray()
        self._discarding = False  # the rest of an aborted reply is still arriving
        self._speech_end: float | None = None  # perf_counter of the last local speech end
        self._stage = CallStage.LISTENING
        self._tasks: set[asyncio.Task[None]] = set()
        #: what the upstream was sent and sent back, for measurements and tests
        self.packets_up = 0
        self.packets_down = 0
        self.barge_ins: list[BridgeBargeIn] = []
        #: set once the upstream socket is open and listening
        self.connected = asyncio.Event()

    # -- the transport's side -----------------------------------------------------------------

    def start(self) -> None:
        if self.state is not CallState.NEW:
            raise RuntimeError(f"call {self.id} is {self.state.value}, not new")
        self.state = CallState.OPEN
        metrics.active_calls.inc()
        metrics.calls_total.inc()
        self._identity = self.upstream.identities.take()
        self._spawn(self._deliver(), "bridge-events")
        self._spawn(self._listen(), "bridge-listen")
        self._spawn(self._link(), "bridge-link")

    def push(self, pcm: bytes) -> None:
        """16 kHz mono s16le input as it arrives (any size); never blocks."""
        if self.state is not CallState.OPEN or not pcm:
            return
        self._inbox.put_nowait(pcm)
        self._inbox_bytes += len(pcm)
        while self._inbox_bytes > MAX_INBOX_SECONDS * UPLINK_RATE * SAMPLE_WIDTH:
            dropped = self._inbox.get_nowait()
            self._inbox_bytes -= len(dropped)
            log.warning("bridge call=%s is behind its input; dropped %d bytes", self.id, len(dropped))

    def read_frame(self) -> bytes | None:
        return self.playout.read_frame()

    @property
    def responding(self) -> bool:
        return self._reply is not None or self.playout.playing

    def interrupt(self) -> bool:
        if self.state is not CallState.OPEN or not self.responding:
            return False
        self._barge_in(self._clock())
        return True

    async def answer_text(self, text: str, language: str | None = None) -> bool:
        """Send `text` as the server's `listen detect` (a wake word or typed text); it answers as
        if it had heard it. False when the upstream is not connected."""
        socket = self._socket
        if self.state is not CallState.OPEN or socket is None:
            self._wanted.set()
            return False
        if self.responding:
            self._barge_in(self._clock())
        try:
            await socket.send_json({"type": "listen", "state": "detect", "text": text})
        except ParleyError:
            return False
        return True

    def notify(self, event: Event) -> None:
        self._emit(event, True)

    async def aclose(self) -> None:
        if self.state is CallState.CLOSED:
            return
        was_open = self.state is CallState.OPEN
        self.state = CallState.CLOSED
        reply, self._reply = self._reply, None
        heard = self.playout.flush()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # tasks end first: the link's own close runs in its finally; this covers a socket mid-handover
        if self._socket is not None:
            await self._socket.aclose()
            self._socket = None
        if reply is not None and reply.turn is not None and not reply.turn.state.finished:
            with contextlib.suppress(Exception):  # hung up mid-reply: history keeps what was heard
                await self._sessions.get(self.session_key).interrupt(reply.turn, heard)
        if self._identity is not None:
            self.upstream.identities.give_back(self._identity)
            self._identity = None
        self._uplink.clear()
        while not self._inbox.empty():
            self._inbox.get_nowait()
        while not self._outbox.empty():
            self._outbox.get_nowait()
        if was_open:
            metrics.active_calls.dec()

    # -- input: uplink audio and barge-in -----------------------------------------------------

    async def _listen(self) -> None:
        while True:
            pcm = await self._inbox.get()
            pieces = [pcm]
            while not self._inbox.empty():
                pieces.append(self._inbox.get_nowait())
            pcm = b"".join(pieces)
            self._inbox_bytes -= len(pcm)
            for packet in self._encoder.encode(pcm):
                self._uplink.append(packet)
                self._uplink_ready.set()
            try:
                found = await self.vad.feed_async(pcm)
            except Exception as exc:  # a broken model must not end the call silently
                log.exception("voice activity detection failed call=%s", self.id)
                self._emit(events.error(self.session_id, self.id, "vad", {"error": str(exc)}), True)
                continue
            for event in found:
                if event.kind == "speech_start":
                    self._emit(events.user_started_speaking(self.session_id, self.id, event.at), True)
                    self._wanted.set()
                    if self.responding:
                        self._barge_in(self._clock())
                else:
                    self._speech_end = self._clock()
                    self._emit(events.user_stopped_speaking(self.session_id, self.id, event.at), True)

    def _barge_in(self, decided: float) -> None:
        reply, self._reply = self._reply, None
        heard = self.playout.flush()  # first: the transport's next frame is silence
        flushed = self._clock()
        sent = self._silence_upstream()
        self.barge_ins.append(BridgeBargeIn(decided, flushed, sent, heard))
        metrics.barge_in_seconds.observe(flushed - decided)
        metrics.turns_total.labels("interrupted").inc()
        if reply is not None:
            reply.cut()
            if reply.speaking:
                turn_id = reply.turn.id if reply.turn is not None else ""
                self._emit(
                    events.assistant_stopped_speaking(self.session_id, self.id, turn_id, interrupted=True),
                    True,
                )
            if reply.turn is not None:
                log.info("bridge barge-in call=%s turn=%s heard=%d chars", self.id, reply.turn.id, len(heard))
                self._spawn(self._interrupt(reply.turn, heard), "bridge-interrupt")
        self._update_stage()

    def _silence_upstream(self) -> float | None:
        """Drop what is held of the reply, send `abort`, and discard its audio still in flight;
        when abort went out (None: no socket)."""
        self._prebuffer.clear()
        self._discarding = True
        socket = self._socket
        if socket is None:
            return None
        self._spawn(self._abort(socket), "bridge-abort")
        return self._clock()

    async def _abort(self, socket: UpstreamSocket) -> None:
        with contextlib.suppress(ParleyError):
            await socket.send_json({"type": "abort"})

    async def _interrupt(self, turn: Turn, heard: str) -> None:
        finished = turn.state.finished
        await self._sessions.get(self.session_key).interrupt(turn, heard)
        if finished and turn.reply is not None:
            # published on the bus by the session; a running turn's own feed carries it otherwise
            self._emit(session_events.interrupted(self.session_id, turn.reply), False)

    # -- the upstream -------------------------------------------------------------------------

    async def _link(self) -> None:
        """Keep the upstream connected while the call lasts: connect, run, and after a failure
        connect again when the user speaks."""
        assert self._identity is not None
        while True:
            self._wanted.clear()
            last_try = self._clock()
            try:
                socket = await self.upstream.connect(self._identity, on_code=self._on_code)
            except ParleyError as exc:
                self._upstream_failed(exc)
            else:
                self._socket = socket
                self.connected.set()
                try:
                    await self._run(socket)
                except ParleyError as exc:
                    self._upstream_failed(exc)
                except Exception as exc:  # a bug here must not leave the call without its server
                    log.exception("xiaozhi bridge call=%s: the upstream session failed", self.id)
                    self._upstream_failed(self.upstream.unavailable(f"session failed ({type(exc).__name__})"))
                finally:
                    self._socket = None
                    self.connected.clear()
                    await socket.aclose()
            await self._wanted.wait()
            await asyncio.sleep(max(0.0, last_try + RECONNECT_SECONDS - self._clock()))

    def _on_code(self, code: str) -> None:
        error = ProviderUnavailable(
            f"the XiaoZhi server at {self.upstream.name} must bind this Parley first: enter the code "
            f"{code} in its console",
            field=FIELD,
        )
        self._emit(events.error(self.session_id, self.id, STAGE, error.to_dict()), True)

    def _upstream_failed(self, exc: ParleyError) -> None:
        log.warning("xiaozhi bridge call=%s: %s", self.id, exc.message)
        metrics.errors_total.labels(STAGE).inc()
        self._emit(events.error(self.session_id, self.id, STAGE, exc.to_dict()), True)
        reply, self._reply = self._reply, None
        if reply is not None:
            reply.end_relay(exc)  # the turn fails with it; what was spoken so far is kept
        self._update_stage()

    async def _run(self, socket: UpstreamSocket) -> None:
        sender = asyncio.create_task(self._send(socket), name=f"bridge-uplink:{self.id}")
        try:
            while True:
                if sender.done():
                    sender.result()  # raises what ended it
                message = await socket.receive()
                if isinstance(message, bytes):
                    self._audio(message)
                elif isinstance(message, Said):
                    self._heard(message.text)
                elif isinstance(message, Speech):
                    self._speech(message)
                elif isinstance(message, Alert):
                    error = ProviderError(
                        f"the XiaoZhi server at {self.upstream.name} says: {message.message}"
                    )
                    self._emit(events.error(self.session_id, self.id, STAGE, error.to_dict()), True)
                elif isinstance(message, Emotion):
                    pass  # a face for a device's screen; not text of the reply
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _send(self, socket: UpstreamSocket) -> None:
        while True:
            await self._uplink_ready.wait()
            while self._uplink:
                await socket.send_audio(self._uplink.popleft())
                self.packets_up += 1
            self._uplink_ready.clear()

    def _heard(self, text: str) -> None:
        """`stt`: the user's words; a turn of the session whose reply the server writes."""
        if not text:
            return
        self._end_reply()
        self._discarding = False
        self._emit(events.transcript(self.session_id, self.id, text, None), True)
        reply = _Reply(turn=None, heard_at=self._clock())
        try:
            reply.turn = self._sessions.get(self.session_key).submit(
                text, source="voice", relay=_relayed(reply.relay)
            )
        except ParleyError as exc:  # Busy: the session's queue is full
            self._emit(events.error(self.session_id, self.id, "turn", exc.to_dict()), True)
        self._begin(reply)

    def _begin(self, reply: _Reply) -> None:
        self._reply = reply
        self.playout.start_turn()
        self._prebuffer.clear()
        reply.task = self._spawn(self._run_reply(reply), "bridge-reply")
        self._update_stage()

    def _speech(self, message: Speech) -> None:
        if message.state == "start":
            if self._discarding:
                return  # the aborted reply's own start, sent before the abort landed
            if self._reply is None or self._reply.stopped:
                self._begin(_Reply(turn=None))  # a reply to nothing heard here: spoken, not stored
        elif message.state == "sentence_start":
            reply = self._reply
            if reply is None or self._discarding or not message.text:
                return
            text = message.text if reply.sentences == 0 else " " + message.text
            reply.sentences += 1
            if reply.turn is not None and not reply.stopped:
                reply.relay.put_nowait(text)
            self._release_prebuffer()
            if reply.segment is not None:
                self.playout.end(reply.segment)
            reply.segment = self.playout.begin(message.text)
        elif message.state == "stop":
            if self._discarding:
                self._discarding = False
                if self.barge_ins and self.barge_ins[-1].stopped_at is None:
                    last = self.barge_ins[-1]
                    self.barge_ins[-1] = BridgeBargeIn(
                        last.decided_at, last.flushed_at, last.abort_sent_at, last.heard, self._clock()
                    )
                return
            self._end_reply()

    def _end_reply(self) -> None:
        """The server's reply is over (`tts stop`, or a new `stt`): its audio plays out."""
        reply = self._reply
        if reply is None:
            return
        self._release_prebuffer(end=True)
        reply.end_relay()

    def _audio(self, packet: bytes) -> None:
        self.packets_down += 1
        reply = self._reply
        if self._discarding or reply is None:
            return  # the rest of an aborted reply, or audio announced by nothing
        try:
            pcm = self._decoder.decode(packet)
        except ParleyError as exc:
            log.info("xiaozhi bridge call=%s: %s", self.id, exc.message)
            return
        if reply.segment is None:
            reply.segment = self.playout.begin("")  # audio before any sentence_start
        if reply.first_frame_at is None and not self.playout.playing:
            self._prebuffer += pcm
            if len(self._prebuffer) >= PREBUFFER_PACKETS * FRAME_MS // 20 * FRAME_BYTES:
                self._release_prebuffer()
            return
        self.playout.write(reply.segment, pcm)

    def _release_prebuffer(self, *, end: bool = False) -> None:
        reply = self._reply
        if reply is None or reply.segment is None:
            self._prebuffer.clear()
            return
        if self._prebuffer:
            self.playout.write(reply.segment, bytes(self._prebuffer))
            self._prebuffer.clear()
        if end:
            self.playout.end(reply.segment)

    async def _run_reply(self, reply: _Reply) -> None:
        """Forward the turn's events to the call's client; end once its audio has played."""
        try:
            turn = reply.turn
            if turn is not None:
                feed = turn.watch()
                while (event := await feed.get()) is not None:
                    self._emit(event, False)  # the session published it on the bus already
                if turn.state is TurnState.COMPLETE:
                    metrics.turns_total.labels("complete").inc()
                if not reply.stopped and self._reply is reply:
                    # stopped elsewhere (another tab's stop): the server goes quiet too
                    self._reply = None
                    reply.cut()
                    self.playout.flush()
                    self._silence_upstream()
            else:
                await reply.ended.wait()
            if not reply.interrupted:
                await self.playout.wait_drained()
        finally:
            if reply.speaking and not reply.interrupted:
                turn_id = reply.turn.id if reply.turn is not None else ""
                self._emit(
                    events.assistant_stopped_speaking(self.session_id, self.id, turn_id, interrupted=False),
                    True,
                )
            if self._reply is reply:
                self._reply = None
            self._update_stage()

    def _on_first_frame(self, at: float) -> None:
        reply = self._reply
        if reply is None or reply.speaking:
            return
        reply.speaking = True
        reply.first_frame_at = at
        turn_id = reply.turn.id if reply.turn is not None else None
        if turn_id is not None:
            self._emit(events.assistant_started_speaking(self.session_id, self.id, turn_id), True)
        ended = self._speech_end
        if ended is not None and reply.heard_at is not None and reply.heard_at >= ended:
            stages = {
                "transcript": round((reply.heard_at - ended) * 1000, 1),
                "first_frame": round((at - ended) * 1000, 1),
            }
            self._emit(events.metrics(self.session_id, self.id, turn_id, stages, {}), True)
            log.info(
                "bridge turn call=%s turn=%s transcript_ms=%s first_frame_ms=%s",
                self.id,
                turn_id,
                stages["transcript"],
                stages["first_frame"],
            )
        self._update_stage()

    # -- stage and events ---------------------------------------------------------------------

    def _update_stage(self) -> None:
        reply = self._reply
        if reply is None:
            stage = CallStage.LISTENING
        else:
            stage = CallStage.SPEAKING if reply.speaking else CallStage.THINKING
        if stage is not self._stage:
            self._stage = stage
            self._emit(events.call_stage(self.session_id, self.id, stage.value), True)

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
