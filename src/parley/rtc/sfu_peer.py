"""SFUCallPeer: the assistant as a participant of the Cloudflare Realtime SFU.

In Cloudflare mode the browser and the assistant never connect to each other. The browser's SFU
session publishes its microphone (`user-mic`); this peer opens an SFU session of its own with an
aiortc connection, publishes the assistant's voice (`ai-voice`) and pulls the browser's mic.
Audio then runs through the same VoiceCall as a direct call (VAD, STT, the session's turn, TTS,
barge-in, events, metrics); only the transport differs. Events reach the browser over its
session WebSocket (the call's own events are published on the session bus), not a data channel.

One attempt = one SFU session + one RTCPeerConnection:
    offer (sendonly voice) -> sessions/new -> tracks/new local (answer) -> connected
    -> first bytes sent (pullers must not be told about a track before it carries media)
    -> tracks/new remote mic (the SFU's offer) -> answer -> renegotiate

Recovery copies Cloudflare's own clients: nothing is repaired in place. When the connection
fails or closes, or inbound audio stops and the SFU says the session is gone, the attempt is
thrown away and a new one starts (fresh ICE servers, new session, re-push, re-pull) after a
backoff. Attempts are numbered; whatever an older attempt's request brings back after a newer one
started is dropped (`_Stale`). The browser learns the new location of the voice track from a
`call_track` event and re-pulls it. aiortc never reports `disconnected`, hence the media check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from parley import metrics
from parley.errors import ParleyError
from parley.rtc.cloudflare import (
    CloudflareRealtimeClient,
    SessionDescription,
    SessionGone,
    SessionNotFound,
    Track,
    TrackError,
)
from parley.rtc.ice import IceConfig, udp_first
from parley.rtc.peer import PeerState, cancel_tasks, reason_label
from parley.rtc.tracks import PlayoutTrack, pump_inbound, shorten_jitter_buffer
from parley.sessions.events import Event
from parley.voice import events
from parley.voice.call import Call

log = logging.getLogger("parley.rtc")

AI_TRACK_NAME = "ai-voice"
#: per-item errors that mean "the browser's track is not there yet": worth asking again
_NOT_YET = frozenset({"not_found_track_error", "empty_track_error"})


@dataclass(frozen=True, slots=True)
class TrackRef:
    """A published track: the SFU session that pushes it and its name."""

    session_id: str
    track_name: str


@dataclass(frozen=True, slots=True)
class Recovery:
    #: consecutive failed attempts before the call ends
    attempts: int = 6
    #: first retry delay, doubled per failure up to max_backoff (with jitter)
    backoff: float = 0.5
    max_backoff: float = 5.0
    #: no inbound audio for this long -> ask the SFU whether our session still exists
    media_timeout: float = 3.0
    #: how long to wait for a connection, first bytes, or the browser's track
    step_timeout: float = 10.0


class _Stale(Exception):
    """A newer attempt (or close) superseded the one that was running."""


@dataclass(slots=True)
class _Attempt:
    number: int
    pc: RTCPeerConnection | None = None
    session_id: str | None = None
    voice_mid: str | None = None
    pulled_mid: str | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    broken: str | None = None
    last_media: float = 0.0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class SFUCallPeer:
    """One per Cloudflare-mode call. `start(call)` once; `aclose(reason)` from anywhere."""

    def __init__(
        self,
        call_id: str,
        *,
        client: CloudflareRealtimeClient,
        mic: TrackRef,
        ice: Callable[[], Awaitable[IceConfig]],
        track_name: str = AI_TRACK_NAME,
        idle_seconds: float = 30.0,
        recovery: Recovery | None = None,
        on_closed: Callable[[SFUCallPeer, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = call_id
        self.mic = mic
        self.track_name = track_name
        self.state = PeerState.NEW
        self.close_reason: str | None = None
        #: how many times the media path was rebuilt
        self.recoveries = 0
        self._client = client
        self._ice = ice
        self._idle_seconds = idle_seconds
        self._recovery = recovery or Recovery()
        self._on_closed = on_closed
        self._clock = clock
        self._call: Call | None = None
        self._attempt: _Attempt | None = None
        self._numbers = 0
        self._ops = asyncio.Lock()  # one SDP change at a time: (re)connect and re-pulls
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._last_activity = clock()

    @property
    def session_id(self) -> str | None:
        """The SFU session that publishes the assistant's voice now (changes on recovery)."""
        attempt = self._attempt
        return attempt.session_id if attempt is not None else None

    @property
    def voice(self) -> TrackRef | None:
        sid = self.session_id
        return (
            TrackRef(sid, self.track_name) if sid is not None and self.state is PeerState.CONNECTED else None
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, call: Call) -> None:
        """Publish the voice and pull the mic (first attempt); raises if that fails."""
        if self.state is not PeerState.NEW:
            raise RuntimeError(f"peer {self.id} already started")
        self._call = call
        self.state = PeerState.ANSWERED
        async with self._ops:
            try:
                await self._connect(self._new_attempt())
            except _Stale:
                raise ParleyError("the call ended while it was connecting") from None
        self.state = PeerState.CONNECTED
        self._spawn(self._watch(), "sfu-watch")

    def send(self, event: Event) -> None:
        """Events need no transport here: the session's WebSockets carry them (see the docstring)."""

    async def move_mic(self, mic: TrackRef) -> None:
        """The browser now publishes its mic from another SFU session (it recovered): re-pull it."""
        self.mic = mic
        async with self._ops:
            attempt = self._attempt
            if attempt is None or attempt.broken or self.state is not PeerState.CONNECTED:
                return  # the attempt being built (or the next) pulls self.mic
            await self._replace_pull(attempt)

    def close_soon(self, reason: str) -> None:
        if self._closing is None and self.state is not PeerState.CLOSED:
            self._closing = asyncio.create_task(self.aclose(reason), name=f"sfu-close:{self.id}")

    async def aclose(self, reason: str = "closed") -> None:
        if self.state is PeerState.CLOSED:
            await self._closed.wait()
            return
        self.state = PeerState.CLOSED
        self.close_reason = reason
        await cancel_tasks(self._tasks)
        if self._call is not None:
            await self._call.aclose()
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            await self._end_attempt(attempt, release=True)
        metrics.call_ends.labels(reason_label(reason)).inc()
        log.info("sfu call closed call=%s reason=%s recoveries=%d", self.id, reason, self.recoveries)
        self._closed.set()
        if self._on_closed is not None:
            self._on_closed(self, reason)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # -- one attempt --------------------------------------------------------------------------

    def _new_attempt(self) -> _Attempt:
        self._numbers += 1
        attempt = self._attempt = _Attempt(self._numbers, last_media=self._clock())
        return attempt

    def _check(self, attempt: _Attempt) -> None:
        if attempt is not self._attempt or self.state is PeerState.CLOSED:
            raise _Stale

    async def _connect(self, attempt: _Attempt) -> None:
        call = self._call
        assert call is not None
        step = self._recovery.step_timeout
        ice = await self._ice()
        self._check(attempt)
        pc = attempt.pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=[
                    RTCIceServer(list(s.urls), s.username, s.credential) for s in udp_first(ice.servers)
                ]
            )
        )
        pc.on("track", lambda track: self._on_track(attempt, track))
        pc.on("connectionstatechange", lambda: self._on_connection_state(attempt))
        voice = PlayoutTrack(call.read_frame, queued=call.playout.queued)
        transceiver = pc.addTransceiver(voice, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate: no trickle
        self._check(attempt)
        attempt.voice_mid = transceiver.mid
        attempt.session_id = (await self._client.new_session()).sessionId
        self._check(attempt)
        reply = await self._client.new_tracks(
            attempt.session_id,
            [Track(location="local", mid=transceiver.mid, trackName=self.track_name)],
            offer=SessionDescription(type="offer", sdp=pc.localDescription.sdp),
        )
        self._check(attempt)
        if reply.sessionDescription is None or reply.sessionDescription.type != "answer":
            raise ParleyError("the SFU published the voice track without an SDP answer")
        await pc.setRemoteDescription(RTCSessionDescription(reply.sessionDescription.sdp, "answer"))
        await asyncio.wait_for(attempt.connected.wait(), step)
        self._check(attempt)
        await asyncio.wait_for(first_bytes(transceiver.sender), step)
        self._check(attempt)
        await self._pull(attempt)
        log.info(
            "sfu call connected call=%s attempt=%d session=%s mic=%s/%s",
            self.id,
            attempt.number,
            attempt.session_id,
            self.mic.session_id,
            self.mic.track_name,
        )

    async def _pull(self, attempt: _Attempt) -> None:
        """Pull the browser's mic into this attempt's session, asking again while it is not there yet."""
        assert attempt.pc is not None and attempt.session_id is not None
        deadline = self._clock() + self._recovery.step_timeout
        delay = 0.1
        while True:
            mic = self.mic
            try:
                reply = await self._client.new_tracks(
                    attempt.session_id,
                    [Track(location="remote", sessionId=mic.session_id, trackName=mic.track_name)],
                )
                break
            except TrackError as exc:
                codes = {t.errorCode for t in exc.failed}
                if not codes <= _NOT_YET or self._clock() + delay > deadline:
                    raise
            self._check(attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            self._check(attempt)
        self._check(attempt)
        pc = attempt.pc
        offer = reply.sessionDescription
        if reply.requiresImmediateRenegotiation and offer is not None:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            mids = {t.mid for t in reply.tracks}
            for transceiver in pc.getTransceivers():
                if transceiver.mid in mids and transceiver.kind == "audio":
                    shorten_jitter_buffer(transceiver.receiver)  # before media flows, as in direct mode
            await pc.setLocalDescription(await pc.createAnswer())
            self._check(attempt)
            await self._client.renegotiate(
                attempt.session_id, SessionDescription(type="answer", sdp=pc.localDescription.sdp)
            )
        attempt.pulled_mid = reply.tracks[0].mid if reply.tracks else None
        attempt.last_media = self._clock()

    async def _replace_pull(self, attempt: _Attempt) -> None:
        old = attempt.pulled_mid
        if old is not None and attempt.session_id is not None:
            with contextlib.suppress(ParleyError):
                await self._client.close_tracks(attempt.session_id, [old], force=True)
            attempt.pulled_mid = None
        await self._pull(attempt)

    async def _end_attempt(self, attempt: _Attempt, *, release: bool) -> None:
        """Stop an attempt's tasks and connection; `release` also asks the SFU to stop its tracks."""
        await cancel_tasks(attempt.tasks)
        sid = attempt.session_id
        if release and sid is not None and attempt.broken is None:
            mids = [m for m in (attempt.voice_mid, attempt.pulled_mid) if m is not None]
            if mids:
                # Best effort and brief: the SFU also forgets a silent session by itself.
                with contextlib.suppress(ParleyError, TimeoutError):
                    await asyncio.wait_for(self._client.close_tracks(sid, mids, force=True), 2.0)
        if attempt.pc is not None:
            await attempt.pc.close()
        if sid is not None:
            self._client.forget(sid)

    # -- watching and recovering --------------------------------------------------------------

    def _on_track(self, attempt: _Attempt, track: MediaStreamTrack) -> None:
        call = self._call
        if track.kind != "audio" or call is None or attempt is not self._attempt:
            return

        def touch() -> None:
            attempt.last_media = self._last_activity = self._clock()

        task = asyncio.create_task(pump_inbound(track, call.push, touch), name=f"sfu-inbound:{self.id}")
        attempt.tasks.add(task)
        task.add_done_callback(attempt.tasks.discard)

    def _on_connection_state(self, attempt: _Attempt) -> None:
        pc = attempt.pc
        if pc is None:
            return
        if pc.connectionState == "connected":
            attempt.connected.set()
        elif pc.connectionState in ("failed", "closed") and attempt.broken is None:
            attempt.broken = f"connection {pc.connectionState}"
            self._wake.set()

    async def _watch(self) -> None:
        """Recover a broken attempt; end the call when the browser has been silent too long."""
        recovery = self._recovery
        interval = max(0.05, min(0.5, recovery.media_timeout / 4))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            now = self._clock()
            if now - self._last_activity >= self._idle_seconds:
                self.close_soon("idle")
                return
            attempt = self._attempt
            if attempt is None:
                return
            if attempt.broken is None and now - attempt.last_media >= recovery.media_timeout:
                attempt.broken = await self._probe(attempt)
                attempt.last_media = now  # probe again only after another quiet spell
            if attempt.broken is not None and not await self._recover(attempt.broken):
                self.close_soon("sfu unavailable")
                return

    async def _probe(self, attempt: _Attempt) -> str | None:
        """The reason to rebuild when the SFU no longer knows our session, else None."""
        if attempt.session_id is None:
            return None
        try:
            await self._client.get_session(attempt.session_id)
        except (SessionGone, SessionNotFound) as exc:
            return f"sfu session gone ({exc.message})"
        except ParleyError:
            return None  # the API is unsure; the media check asks again later
        return None

    async def _recover(self, reason: str) -> bool:
        """Rebuild the media path with new attempts and backoff; False when every attempt failed."""
        recovery = self._recovery
        call = self._call
        assert call is not None
        log.warning("sfu call reconnecting call=%s reason=%s", self.id, reason)
        for failures in range(recovery.attempts):
            async with self._ops:
                old = self._attempt
                attempt = self._new_attempt()
                if old is not None:
                    await self._end_attempt(old, release=old.broken is None)
                call.notify(events.reconnecting(call.session_id, self.id, attempt.number, reason))
                delay = min(recovery.max_backoff, recovery.backoff * 2**failures)
                await asyncio.sleep(delay / 2 + random.random() * delay / 2)
                try:
                    await self._connect(attempt)
                except _Stale:
                    return True
                except (ParleyError, TimeoutError, OSError, ValueError) as exc:
                    reason = f"attempt {attempt.number} failed: {exc}"
                    log.warning("sfu call call=%s %s", self.id, reason)
                    attempt.broken = reason
                    continue
            self.recoveries += 1
            metrics.sfu_recoveries.inc()
            assert attempt.session_id is not None
            call.notify(
                events.track_moved(
                    call.session_id, self.id, attempt.session_id, self.track_name, attempt.number
                )
            )
            return True
        return False

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=f"{name}:{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def first_bytes(sender: RTCRtpSender) -> None:
    """Wait until `sender` has sent media: the SFU rejects pulls of a track that carried none."""
    while True:
        report = await sender.getStats()
        for stats in report.values():
            if getattr(stats, "type", None) == "outbound-rtp" and getattr(stats, "bytesSent", 0) > 0:
                return
        await asyncio.sleep(0.02)
