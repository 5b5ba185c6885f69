"""CallPeer: the server's aiortc peer of one call, glued to that call's VoiceCall.

Signalling is one round trip without trickle ICE: the browser posts its offer, aiortc gathers
every candidate during `setLocalDescription`, and the answer carries them all.

The peer ends on hang-up, on ICE/DTLS failure (`connectionState` failed or closed) and when no
media or data-channel message has arrived for `idle_seconds`: aiortc never reports
`disconnected`, so a browser that vanished is noticed by its audio stopping (a muted browser
track still sends silence frames, so a live call is never idle).

Events go to the client over the data channel the browser opened (any label); they are kept
under ~1100 bytes each (aiortc does no MTU discovery): long `chunk` texts are split into several
chunks, and bulky fields of other events are dropped with `"truncated": true` (the full text is in
the chunks already, and in /api/history).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from parley import metrics
from parley.errors import InvalidInput
from parley.rtc.ice import IceServer
from parley.rtc.tracks import PlayoutTrack, pump_inbound, shorten_jitter_buffer
from parley.sessions.events import Event
from parley.voice.call import Call

log = logging.getLogger("parley.rtc")

#: data channel messages stay under this (aiortc has no path MTU discovery)
MAX_MESSAGE_BYTES = 1100
#: events held until the data channel opens; older ones are dropped first
PENDING_EVENTS = 256


class PeerState(Enum):
    NEW = "new"
    ANSWERED = "answered"
    CONNECTED = "connected"
    CLOSED = "closed"


class CallPeer:
    """One per call. `answer(offer)` once; `aclose(reason)` from anywhere, any number of times."""

    def __init__(
        self,
        call_id: str,
        *,
        ice_servers: tuple[IceServer, ...] = (),
        idle_seconds: float = 30.0,
        on_closed: Callable[[CallPeer, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = call_id
        self.state = PeerState.NEW
        self.close_reason: str | None = None
        self._ice_servers = ice_servers
        self._idle_seconds = idle_seconds
        self._on_closed = on_closed
        self._clock = clock
        self._call: Call | None = None
        self._pc: RTCPeerConnection | None = None
        self._track: PlayoutTrack | None = None
        self._channel: RTCDataChannel | None = None
        self._pending: deque[str] = deque(maxlen=PENDING_EVENTS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._last_activity = clock()

    # -- signalling ---------------------------------------------------------------------------

    async def answer(self, call: Call, offer_sdp: str) -> str:
        """Connect `call` (started) to a new peer from the browser's offer; returns the answer SDP."""
        if self.state is not PeerState.NEW:
            raise RuntimeError(f"peer {self.id} already answered")
        self._call = call
        config = RTCConfiguration(
            iceServers=[RTCIceServer(list(s.urls), s.username, s.credential) for s in self._ice_servers]
        )
        pc = self._pc = RTCPeerConnection(config)
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise InvalidInput(f"sdp is not a usable WebRTC offer ({exc})", field="sdp") from exc
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise InvalidInput("the offer has no audio: add a microphone track before offering", field="sdp")
        for transceiver in audio:  # before any packet arrives: the answer is not out yet
            shorten_jitter_buffer(transceiver.receiver)
        self._track = PlayoutTrack(call.read_frame, queued=call.playout.queued)
        pc.addTrack(self._track)
        await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate: no trickle
        self.state = PeerState.ANSWERED
        self._spawn(self._watch_idle(), "rtc-idle")
        return pc.localDescription.sdp

    # -- events to the client -----------------------------------------------------------------

    def send(self, event: Event) -> None:
        """Queue an event for the data channel (held until it opens)."""
        for message in fit_message(event.data):
            channel = self._channel
            if channel is not None and channel.readyState == "open":
                channel.send(message)
            else:
                self._pending.append(message)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._channel is not None:
            return  # one event channel per call; a second one is ignored
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._flush_pending()
        else:
            channel.on("open", self._flush_pending)

    def _flush_pending(self) -> None:
        channel = self._channel
        while self._pending and channel is not None and channel.readyState == "open":
            channel.send(self._pending.popleft())

    def _on_message(self, message: str | bytes) -> None:
        self._touch()
        try:
            data = json.loads(message)
        except (ValueError, TypeError):
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "ping" and self._channel is not None:
            self._channel.send(json.dumps({"type": "pong"}))
        elif kind == "hangup":
            self.close_soon("hangup")

    # -- media and connection state -----------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._call is not None:
            self._spawn(pump_inbound(track, self._call.push, self._touch), "rtc-inbound")

    def _on_connection_state(self) -> None:
        pc = self._pc
        if pc is None:
            return
        if pc.connectionState == "connected" and self.state is PeerState.ANSWERED:
            self.state = PeerState.CONNECTED
            log.info("call connected call=%s", self.id)
        elif pc.connectionState in ("failed", "closed"):
            self.close_soon(f"connection {pc.connectionState}")

    def _touch(self) -> None:
        self._last_activity = self._clock()

    async def _watch_idle(self) -> None:
        interval = max(0.05, min(1.0, self._idle_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            if self._clock() - self._last_activity >= self._idle_seconds:
                self.close_soon("idle")
                return

    # -- lifecycle ----------------------------------------------------------------------------

    def close_soon(self, reason: str) -> None:
        """Close from a callback that cannot await (aiortc events, the idle watchdog)."""
        if self._closing is None and self.state is not PeerState.CLOSED:
            self._closing = asyncio.create_task(self.aclose(reason), name=f"rtc-close:{self.id}")

    async def aclose(self, reason: str = "closed") -> None:
        """Stop media, the call and the connection; idempotent, and waits for a close under way."""
        if self.state is PeerState.CLOSED:
            await self._closed.wait()
            return
        self.state = PeerState.CLOSED
        self.close_reason = reason
        await cancel_tasks(self._tasks)
        if self._call is not None:
            await self._call.aclose()
        if self._track is not None:
            self._track.stop()
        if self._pc is not None:
            await self._pc.close()
        self._channel = None
        self._pending.clear()
        metrics.call_ends.labels(reason_label(reason)).inc()
        log.info("call closed call=%s reason=%s", self.id, reason)
        self._closed.set()
        if self._on_closed is not None:
            self._on_closed(self, reason)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=f"{name}:{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def cancel_tasks(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel `tasks` (all but the one running this) and wait until they have ended."""
    current = asyncio.current_task()
    others = [t for t in tasks if t is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def reason_label(reason: str) -> str:
    # a bounded label set for Prometheus
    return (
        reason
        if reason
        in ("hangup", "idle", "shutdown", "connection failed", "connection closed", "sfu unavailable")
        else "other"
    )


def fit_message(data: str, limit: int = MAX_MESSAGE_BYTES) -> list[str]:
    """`data` as data-channel messages of at most `limit` bytes (see the module docstring)."""
    if len(data.encode()) <= limit:
        return [data]
    event: dict[str, Any] = json.loads(data)
    if event.get("type") == "chunk" and isinstance(event.get("text"), str):
        return _split_chunk(event, limit)
    event.pop("response", None)
    message = event.get("message")
    if isinstance(message, dict):
        event["message"] = {k: v for k, v in message.items() if k != "content"}
    event["truncated"] = True
    compact = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    if len(compact.encode()) <= limit:
        return [compact]
    keep = {k: event[k] for k in ("type", "sessionId", "callId", "turnId") if k in event}
    return [json.dumps({**keep, "truncated": True}, separators=(",", ":"))]


def _split_chunk(event: dict[str, Any], limit: int) -> list[str]:
    text: str = event["text"]
    room = limit - len(json.dumps({**event, "text": ""}, ensure_ascii=False, separators=(",", ":")).encode())
    out: list[str] = []
    while text:
        # JSON escaping can grow a character to 6 bytes (a \u escape) or 4 in UTF-8: halve until it fits.
        size = min(len(text), max(1, room))
        while True:
            piece = json.dumps({**event, "text": text[:size]}, ensure_ascii=False, separators=(",", ":"))
            if len(piece.encode()) <= limit or size == 1:
                break
            size = max(1, size // 2)
        out.append(piece)
        text = text[size:]
    return out
