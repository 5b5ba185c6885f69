"""DeviceConnection: one XiaoZhi device's session, driving one VoiceCall (as CallPeer does for WebRTC).

    device --binary Opus (v1/2/3)--> OpusDecoder --16 kHz PCM--> VoiceCall.push
    VoiceCall --events--> stt / llm / tts JSON;  Playout --48 kHz--> OpusEncoder --60 ms packets--> device

The device says hello first (within `HELLO_SECONDS`), Parley answers with the session id and the
downlink `audio_params`. Turn-taking is the call's own (Silero VAD on the server) in every listen
mode: `manual` and `auto` devices also send `listen stop`, which closes an open utterance at once
(trailing silence pushed into the VAD); `realtime` devices never do. After `tts stop`, `auto` and
`realtime` devices are listened to again by themselves; a `manual` one needs `listen start`. While
the reply plays, the device's audio is dropped (its microphone hears the speaker) unless it is in
realtime mode with `features.aec`, where speech barges in like in a browser call. `abort` stops
the reply at once; `listen detect` with text (a wake word, or typed text) is a turn of that text.
A device whose hello says `features.mcp` has its tools listed (xiaozhi/mcp.py) and lent to its
session while it is connected, so the model can call them.

Downlink audio goes out paced on an absolute 60 ms schedule, the first `LEAD_PACKETS` of a reply
at once (the device's jitter buffer then absorbs a stall that long); every packet is exactly 60 ms (the end of a reply is padded with silence). Everything sent goes
through one outbox, so `tts start` and `sentence_start` always precede the audio they announce.

A bad frame (malformed JSON, an unknown type, bad Opus) gets an `alert` and the connection goes
on; an oversized frame, a flood of bad frames, no hello, or 120 s without input closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from parley.errors import InvalidInput, ParleyError, PayloadTooLarge
from parley.providers.vad import SAMPLE_RATE
from parley.sessions.events import Event
from parley.sessions.registry import SessionRegistry
from parley.voice.pipeline import VoiceCall
from parley.voice.playout import SILENCE
from parley.xiaozhi import protocol
from parley.xiaozhi.emotion import EMOJI_OF, emotion_of
from parley.xiaozhi.mcp import DeviceTools
from parley.xiaozhi.opus import OpusDecoder, OpusEncoder
from parley.xiaozhi.protocol import FRAME_MS, Abort, Hello, Ignored, Listen, ListenMode, ListenState, Mcp
from parley.xiaozhi.typed import TypedTurns

log = logging.getLogger("parley.xiaozhi")

HELLO_SECONDS = 10.0
IDLE_SECONDS = 120.0
#: bad frames in a row after which the device is flooding, not glitching
MAX_BAD_FRAMES = 50
#: playout frames (20 ms at 48 kHz) per downlink packet
FRAMES_PER_PACKET = FRAME_MS // 20
DOWNLINK_RATE = 24000
#: packets of a reply sent ahead of its real-time schedule (xiaozhi-esp32-server sends 3)
LEAD_PACKETS = 3

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_ERROR = 1011


class Channel(Protocol):
    """The transport under a device session (a WebSocket, or MQTT for JSON + UDP for audio)."""

    #: what the server hello says the transport is ("websocket", "udp")
    transport: str

    async def receive(self) -> str | bytes | None:
        """The next frame, or None when the device has gone."""

    def hello_fields(self, hello: Hello) -> dict[str, Any]:
        """Fields the transport adds to the server hello (the UDP block: address, key, nonce)."""

    async def send_text(self, text: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Closed(Exception):
    """The session must end: close the channel with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Limits:
    hello_seconds: float = HELLO_SECONDS
    idle_seconds: float = IDLE_SECONDS
    max_bad_frames: int = MAX_BAD_FRAMES
    #: uplink audio a device may send ahead of real time, in seconds (a burst after a stall)
    audio_burst_seconds: float = 15.0
    #: the rate uplink audio may sustain, as a multiple of real time
    audio_rate: float = 2.0


class DeviceConnection:
    """One per device socket: `await run()`; it returns when the device is gone or was closed."""

    def __init__(
        self,
        channel: Channel,
        make_call: Callable[[Callable[[Event], None]], VoiceCall],
        *,
        version: int,
        device_id: str,
        limits: Limits | None = None,
        downlink_rate: int = DOWNLINK_RATE,
        typed: Callable[[VoiceCall], TypedTurns] | None = None,
        sessions: SessionRegistry | None = None,
    ) -> None:
        self.channel = channel
        self.version = version
        self.device_id = device_id
        self.limits = limits or Limits()
        self.downlink_rate = downlink_rate
        self.call = make_call(self._on_event)
        self.session_id = self.call.id
        #: turns typed into the conversation elsewhere, spoken here (None: not listened for)
        self.typed = typed(self.call) if typed is not None else None
        #: where the device's MCP tools are lent to its session (None: they are not offered)
        self.sessions = sessions
        self.tools: DeviceTools | None = None
        self.hello: Hello | None = None
        self.mode = ListenMode.AUTO
        self.listening = False
        #: the reply's audio is going out (between `tts start` and `tts stop`)
        self.speaking = False
        self.close_reason = ""
        self._outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._decoder = OpusDecoder()
        self._encoder = OpusEncoder(downlink_rate)
        self._reply_text: list[str] = []
        self._emotion_sent = False
        self._bad_frames = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent_packets = 0
        self._bucket = self.limits.audio_burst_seconds  # uplink audio seconds allowed now
        self._bucket_at: float | None = None
        self._audio_in = 0  # uplink packets decoded
        self._audio_dropped = 0  # of those, not listened to (not listening, or the reply playing)

    # -- the session --------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._write(), name=f"xiaozhi-writer:{self.session_id}")
        code, reason = CLOSE_NORMAL, "bye"
        try:
            await self._greet()
            self.call.start()
            self._spawn(self._pump(), "xiaozhi-downlink")
            if self.typed is not None:
                self._spawn(self.typed.run(), "xiaozhi-typed")
            await self._serve_frames()
        except Closed as exc:
            code, reason = exc.code, exc.reason
        except Exception:
            log.exception("xiaozhi device=%s session=%s failed", self.device_id, self.session_id)
            code, reason = CLOSE_ERROR, "server error"
        finally:
            self.close_reason = reason
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.tools is not None:
                if self.sessions is not None:
                    self.sessions.withdraw_tools(self.call.session_key, self.tools)
                self.tools.close()
            await self.call.aclose()
            self._outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer
            if code != 0:
                with contextlib.suppress(Exception):
                    await self.channel.close(code, reason)
            log.info(
                "xiaozhi device=%s session=%s closed reason=%s packets_in=%d dropped=%d packets_out=%d",
                self.device_id,
                self.session_id,
                reason,
                self._audio_in,
                self._audio_dropped,
                self._sent_packets,
            )

    async def _greet(self) -> None:
        frame = await self._receive(self.limits.hello_seconds, "no hello")
        try:
            message = self._message(frame)
        except InvalidInput as exc:
            self._alert(exc)
            raise Closed(CLOSE_POLICY, "hello expected") from None
        if not isinstance(message, Hello):
            self._alert(InvalidInput(f"the first message must be hello, not {message.type}", field="type"))
            raise Closed(CLOSE_POLICY, "hello expected")
        if message.audio_params.format != "opus":
            self._alert(InvalidInput("audio_params.format must be opus", field="audio_params.format"))
            raise Closed(CLOSE_POLICY, "opus only")
        self.hello = message
        self._decoder = OpusDecoder()
        self._outbox.put_nowait(self._server_hello())
        if message.features.mcp:
            self.tools = DeviceTools(self._send_mcp, device_id=self.device_id)
            self._spawn(self._offer_tools(self.tools), "xiaozhi-mcp")

    def _send_mcp(self, payload: dict[str, Any]) -> None:
        self._outbox.put_nowait(protocol.mcp(self.session_id, payload))

    async def _offer_tools(self, tools: DeviceTools) -> None:
        try:
            count = await tools.start()
        except ParleyError as exc:  # a device that says mcp but does not answer it: no tools
            log.info("xiaozhi device=%s offers no tools: %s", self.device_id, exc.message)
            return
        if count and self.sessions is not None:
            self.sessions.lend_tools(self.call.session_key, tools)

    def _server_hello(self) -> str:
        assert self.hello is not None
        return protocol.server_hello(
            self.session_id,
            self.downlink_rate,
            transport=self.channel.transport,
            **self.channel.hello_fields(self.hello),
        )

    async def _receive(self, timeout: float, why: str) -> str | bytes:
        try:
            async with asyncio.timeout(timeout):
                frame = await self.channel.receive()
        except TimeoutError:
            raise Closed(CLOSE_NORMAL, why) from None
        return self._checked(frame)

    def _checked(self, frame: str | bytes | None) -> str | bytes:
        if frame is None:
            raise Closed(0, "gone")
        if len(frame) > protocol.MAX_FRAME_BYTES:
            limit = protocol.MAX_FRAME_BYTES
            self._alert(PayloadTooLarge(f"frame is larger than {limit} bytes", field="frame", limit=limit))
            raise Closed(CLOSE_TOO_BIG, f"frame larger than {limit} bytes")
        return frame

    async def _serve_frames(self) -> None:
        """Every frame after hello, until the device goes, is closed or stays quiet too long.

        One idle timer for the session, moved at most every `slack` seconds rather than armed
        and cancelled around each frame (16 a second per device): the socket closes between
        `idle_seconds` and `idle_seconds + slack` after the last input, never earlier.
        """
        loop = asyncio.get_running_loop()
        timeout = self.limits.idle_seconds
        slack = min(1.0, timeout / 10)
        previous = armed = loop.time()
        try:
            async with asyncio.timeout_at(armed + timeout + slack) as idle:
                while True:
                    frame = self._checked(await self.channel.receive())
                    now = loop.time()
                    if now - armed > slack:
                        idle.reschedule(now + timeout + slack)
                        armed = now
                    self._handle(frame)
                    # Frames back to back are a burst the reader would go through without
                    # yielding (the socket's queue has them): let the downlink pump run between.
                    if now - previous < 0.002 and (isinstance(frame, str) or not self.speaking):
                        await asyncio.sleep(0)
                    previous = now
        except TimeoutError:
            if idle.expired():
                raise Closed(CLOSE_NORMAL, "idle") from None
            raise

    # -- device -> server ---------------------------------------------------------------------

    def _handle(self, frame: str | bytes) -> None:
        try:
            if isinstance(frame, bytes):
                packet = protocol.unpack(self.version, frame)
                if packet.kind is protocol.PayloadType.JSON:
                    self._command(self._message(packet.payload))
                else:
                    self._audio(packet.payload)
            else:
                self._command(self._message(frame))
        except InvalidInput as exc:
            self._bad_frames += 1
            if self._bad_frames >= self.limits.max_bad_frames:
                self._alert(exc)
                raise Closed(CLOSE_POLICY, f"{self._bad_frames} bad frames in a row") from None
            if self._bad_frames == 1:  # one alert per run of bad frames, not one per frame
                self._alert(exc)
            return
        self._bad_frames = 0

    @staticmethod
    def _message(raw: str | bytes) -> protocol.DeviceMessage:
        return protocol.parse_message(raw)

    def _command(self, message: protocol.DeviceMessage) -> None:
        if isinstance(message, Listen):
            self._listen(message)
        elif isinstance(message, Abort):
            self._abort()
        elif isinstance(message, Hello):
            self.hello = message
            self._outbox.put_nowait(self._server_hello())
        elif isinstance(message, Mcp):
            if self.tools is not None:
                self.tools.receive(message.payload)
        elif isinstance(message, Ignored):
            pass

    def _listen(self, message: Listen) -> None:
        if message.mode is not None:
            self.mode = message.mode
        if message.state is ListenState.START:
            self.listening = True
        elif message.state is ListenState.STOP:
            if self.listening:
                self._end_utterance()
            self.listening = False
        elif message.text:
            text = message.text.strip()
            if text:
                self._outbox.put_nowait(protocol.stt(self.session_id, text))
                self._spawn(self._answer(text), "xiaozhi-detect")

    async def _answer(self, text: str) -> None:
        if self.speaking:
            self._abort()
        await self.call.answer_text(text)

    def _abort(self) -> None:
        if self.typed is not None:
            self.typed.stop()
        self.call.interrupt()
        self.call.playout.flush()
        self._encoder.drop()

    def _audio(self, packet: bytes) -> None:
        self._check_audio_rate()
        pcm = self._decoder.decode(packet)
        self._audio_in += 1
        if not self.listening or (self.speaking and not self._barge_in_allowed):
            self._audio_dropped += 1
            return  # not listening, or the device's microphone hears its own speaker
        self.call.push(pcm)

    def _check_audio_rate(self) -> None:
        """A token bucket of audio seconds: a device streaming faster than `audio_rate` x real
        time, beyond a burst, is refused frame by frame (and closed as a flood if it goes on)."""
        now = time.monotonic()
        limits = self.limits
        if self._bucket_at is None:
            self._bucket_at = now
        self._bucket = min(
            limits.audio_burst_seconds, self._bucket + (now - self._bucket_at) * limits.audio_rate
        )
        self._bucket_at = now
        if self._bucket < FRAME_MS / 1000:
            raise InvalidInput(
                f"audio arrives faster than {limits.audio_rate:g}x real time",
                field="audio",
                limit=limits.audio_rate,
            )
        self._bucket -= FRAME_MS / 1000

    @property
    def _barge_in_allowed(self) -> bool:
        features = self.hello.features if self.hello else None
        return self.mode is ListenMode.REALTIME and features is not None and features.aec

    def _end_utterance(self) -> None:
        # enough silence for the VAD's hangover (and its tail): an open utterance ends now
        voice = self.call.config
        seconds = voice.stop_secs + voice.tail_secs + 0.1
        self.call.push(bytes(int(seconds * SAMPLE_RATE) * 2))

    # -- server -> device ---------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """The call's events (its own and the turn's) as the device's messages."""
        kind = event.type
        if kind == "transcript":
            text = str(json.loads(event.data).get("text") or "")
            if text:
                self._outbox.put_nowait(protocol.stt(self.session_id, text))
        elif kind == "turn_started":
            self._reply_text, self._emotion_sent = [], False
        elif kind == "chunk":
            text = json.loads(event.data).get("text")
            if isinstance(text, str):
                self._reply_text.append(text)
        elif kind == "reply":
            self._send_emotion()
        elif kind == "error":
            data = json.loads(event.data)
            error = data.get("error") if isinstance(data.get("error"), dict) else data
            self._outbox.put_nowait(protocol.alert(self.session_id, error))

    def _send_emotion(self) -> None:
        if not self._emotion_sent:
            self._emotion_sent = True
            emotion = emotion_of("".join(self._reply_text))
            self._outbox.put_nowait(protocol.llm(self.session_id, emotion, EMOJI_OF[emotion]))

    async def _pump(self) -> None:
        """Downlink: 60 ms packets on an absolute schedule while the playout has audio."""
        playout = self.call.playout
        period = FRAME_MS / 1000
        loop = asyncio.get_running_loop()
        due = 0.0
        while True:
            if not self.speaking:
                await playout.queued.wait()
                self.speaking = True
                self._send_emotion()
                self._outbox.put_nowait(protocol.tts(self.session_id, "start"))
                # The first LEAD_PACKETS go out at once, as the reference server's pre-buffer
                # does: the device's queue then holds that much, and a stall of the server (or
                # the network) shorter than it is not a hole in the reply.
                due = loop.time() - LEAD_PACKETS * period
                segment = None
            pcm = bytearray()
            audible = False
            for _ in range(FRAMES_PER_PACKET):
                frame = self.call.read_frame()
                if frame is None:
                    pcm += SILENCE
                    continue
                audible = True
                if playout.segment is not None and playout.segment is not segment:
                    segment = playout.segment
                    self._outbox.put_nowait(protocol.tts(self.session_id, "sentence_start", segment.text))
                pcm += frame
            if audible:
                self._send_packets(self._encoder.encode(bytes(pcm)))
            elif not self.call.responding and not (self.typed is not None and self.typed.active):
                self._send_packets(self._encoder.flush())
                self.speaking = False
                self._outbox.put_nowait(protocol.tts(self.session_id, "stop"))
                if self.mode is ListenMode.MANUAL:
                    self.listening = False
                continue
            due += period
            await asyncio.sleep(max(0.0, due - loop.time()))

    def _send_packets(self, packets: list[bytes]) -> None:
        for packet in packets:
            self._outbox.put_nowait(
                protocol.pack(self.version, packet, timestamp=self._sent_packets * FRAME_MS)
            )
            self._sent_packets += 1

    def _alert(self, exc: ParleyError) -> None:
        log.info("xiaozhi device=%s refused a frame: %s", self.device_id, exc.message)
        self._outbox.put_nowait(protocol.alert(self.session_id, exc.to_dict()))

    async def _write(self) -> None:
        while (item := await self._outbox.get()) is not None:
            try:
                if isinstance(item, bytes):
                    await self.channel.send_bytes(item)
                else:
                    await self.channel.send_text(item)
            except Exception:
                return  # the device is gone; the reader sees it too

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=f"{name}:{self.session_id}")  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
