"""Session: one SFU session = one aiortc RTCPeerConnection on the stand-in's side, and its tracks.

Negotiation follows Cloudflare's API:

- publish: the client's offer is set, its named sending media sections become `PublishedTrack`s
  and the stand-in answers. Media sections nobody named are answered `inactive`, so aiortc does
  not decode audio into a queue no one reads. A track counts as carrying media from its first
  RTP packet; pulling it before then is `empty_track_error`, as at Cloudflare.
- pull: a sendonly transceiver carrying a `RelayTrack` is added and the stand-in makes an offer;
  until PUT renegotiate brings the answer, every other mutation is refused (406). A pull waits up
  to `connect_timeout` for the peer to be connected (else 425), except on a session that has
  never negotiated: its pull's offer is what starts the connection. A pull inside a call that
  carries the client's offer (next to local tracks) needs a free recvonly audio section in that
  offer instead, and is answered there.
- one mutation at a time: a second one while the first still runs gets 406 at once, as the real
  SFU's SDP state machine does; nothing is queued here (clients serialise).

aiortc notes, checked against aiortc 1.16:
- Renegotiation needs no workaround: a transceiver added to a connected peer gets its own ICE
  transport in the new offer, and when the answer arrives aiortc moves it onto the BUNDLE's
  transport and starts sending on the existing connection.
- A stopped transceiver is still offered with its old direction; `TrackEntry.close` sets it to
  `inactive` so later offers and answers say so.
- `transceiver.stop()` on the sending side sends RTCP BYE: the remote track ends at once.
- createOffer renumbers payload types and header extensions its own way each time; pull offers
  keep the client's numbers (`numbering.py`), as a browser needs.
- `pc.close()` sends DTLS close_notify: a remote aiortc peer goes to `closed` within
  milliseconds (then closes itself), a browser sees its DTLS transport close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from enum import Enum
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
    sdp,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError

from parley.rtc.tracks import shorten_jitter_buffer
from parley.standins.sfu.errors import SFUError, TrackRefused, invalid_description, session_closed
from parley.standins.sfu.numbering import ClientNumbering
from parley.standins.sfu.relay import PublishedTrack
from parley.standins.sfu.tracks import TrackEntry, failed_item, msid_track, remote_echo
from parley.standins.sfu.wire import TrackIn, TracksCloseIn, TracksNewIn

log = logging.getLogger("parley.standins.sfu")

#: what aiortc raises for an SDP it cannot parse or apply
_SDP_ERRORS = (
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    TypeError,
    InvalidStateError,
    InvalidAccessError,
    OperationError,
)
_SENDING = ("sendonly", "sendrecv")

#: (session id, track name) -> the published track, or TrackRefused saying why not
TrackLookup = Callable[[str, str], PublishedTrack]


class SessionState(Enum):
    OPEN = "open"
    CLOSED = "closed"


class Session:
    """One SFU session. Mutations are the async methods; `aclose` may come from anywhere."""

    def __init__(self, session_id: str, *, lookup: TrackLookup, connect_timeout: float) -> None:
        self.id = session_id
        self.state = SessionState.OPEN
        self.close_reason: str | None = None
        self.closed_at: float | None = None
        self.published: dict[str, PublishedTrack] = {}
        self._lookup = lookup
        self._connect_timeout = connect_timeout
        # No ICE servers: host candidates only, and no wait on a STUN server that may be unreachable.
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc.on("connectionstatechange", self._on_connection_state)
        self._entries: list[TrackEntry] = []
        self._pending_offer = False
        #: payload types and header extension ids the client chose; later offers keep them
        self._numbering = ClientNumbering()
        self._busy = False
        self._changed = asyncio.Event()  # a connection state change, or the session closing
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    def check_open(self) -> None:
        if self.state is SessionState.CLOSED:
            raise session_closed(self.id)

    # -- mutations ------------------------------------------------------------------------------

    async def answer_initial(self, offer: str) -> str:
        """The older sessions/new: negotiate the connection from an offer, publishing nothing."""
        async with self._mutation():
            await self._apply_offer(offer)
            return await self._answer()

    async def add_tracks(self, body: TracksNewIn) -> dict[str, Any]:
        async with self._mutation():
            if body.sessionDescription is None:
                return await self._pull(body.tracks)
            return await self._publish(body.sessionDescription.sdp, body.tracks, body.autoDiscover)

    async def renegotiate(self, answer: str) -> None:
        async with self._mutation(answering=True):
            if not self._pending_offer:
                raise invalid_description("no offer of this session is waiting for an answer")
            try:
                await self._pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            except _SDP_ERRORS as exc:
                self.check_open()
                raise invalid_description(f"the answer was refused: {exc}") from exc
            self._pending_offer = False
            for entry in self._entries:
                entry.negotiated = True

    async def close_tracks(self, body: TracksCloseIn) -> dict[str, Any]:
        async with self._mutation():
            offer = body.sessionDescription
            if offer is not None:
                await self._apply_offer(offer.sdp)
            results: list[dict[str, Any]] = []
            for item in body.tracks:
                entry = self._open_entry(item.mid)
                if entry is None:
                    results.append(
                        failed_item(
                            {"mid": item.mid}, "close_track_error", f"no open track has mid {item.mid!r}"
                        )
                    )
                    continue
                await entry.close()
                if entry.location == "local":
                    self.published.pop(entry.name, None)
                results.append({"mid": item.mid})
            reply: dict[str, Any] = {"requiresImmediateRenegotiation": False, "tracks": results}
            if offer is not None:
                reply["sessionDescription"] = {"type": "answer", "sdp": await self._answer()}
            return reply

    @asynccontextmanager
    async def _mutation(self, *, answering: bool = False) -> AsyncIterator[None]:
        self.check_open()
        if self._busy:
            raise SFUError(
                406, "session_error", "another change to this session is still running: serialise them"
            )
        if self._pending_offer and not answering:
            raise SFUError(
                406, "session_error", "the session's offer is waiting for its answer: PUT renegotiate first"
            )
        self._busy = True
        try:
            yield
        except SFUError:
            raise
        except Exception as exc:
            # aiortc refusing anything because the connection closed under us means 410
            if self.state is SessionState.CLOSED:
                raise session_closed(self.id) from exc
            raise
        finally:
            self._busy = False

    # -- pulling (the stand-in offers) ----------------------------------------------------------

    async def _pull(self, items: list[TrackIn]) -> dict[str, Any]:
        await self._wait_connected()
        results: list[dict[str, Any]] = []
        added: list[tuple[dict[str, Any], TrackEntry]] = []
        for item in items:
            echo = remote_echo(item)
            try:
                source = self._lookup(item.sessionId or "", item.trackName or "")
            except TrackRefused as refused:
                results.append(failed_item(echo, refused.code, refused.description))
                continue
            relay = source.subscribe()
            transceiver = self._pc.addTransceiver(relay, direction="sendonly")
            entry = TrackEntry("remote", source.name, transceiver, source, relay, negotiated=False)
            self._entries.append(entry)
            results.append(echo)
            added.append((echo, entry))
        if not added:
            return {"requiresImmediateRenegotiation": False, "tracks": results}
        ours = await self._pc.createOffer()
        renumbered = self._numbering.apply(ours.sdp, self._pc.getTransceivers())
        await self._pc.setLocalDescription(RTCSessionDescription(renumbered, "offer"))  # gathers: no trickle
        self._pending_offer = True
        for echo, entry in added:
            echo["mid"] = entry.mid
        offer = {"type": "offer", "sdp": self._pc.localDescription.sdp}
        return {"requiresImmediateRenegotiation": True, "sessionDescription": offer, "tracks": results}

    async def _wait_connected(self) -> None:
        if self._pc.remoteDescription is None:
            return  # never negotiated: this pull's offer is what starts the connection
        deadline = time.monotonic() + self._connect_timeout
        while True:
            self._changed.clear()
            self.check_open()
            if self._pc.connectionState == "connected":
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SFUError(
                    425,
                    "session_error",
                    f"the session's peer connection is not connected after {self._connect_timeout:g} s "
                    f"(it is {self._pc.connectionState})",
                )
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- publishing (the client offers) ---------------------------------------------------------

    async def _publish(self, offer: str, items: list[TrackIn], auto_discover: bool) -> dict[str, Any]:
        media = await self._apply_offer(offer)
        claimed = {entry.mid for entry in self._entries if not entry.closed}
        results: list[dict[str, Any]] = []
        for item in items:
            if item.location == "local":
                results.append(self._publish_one(item.mid or "", item.trackName or "", media, claimed))
            else:
                results.append(self._pull_offered(item, media, claimed))
        if auto_discover:
            for mid, section in media.items():
                if mid not in claimed and section.direction in _SENDING:
                    results.append(self._publish_one(mid, msid_track(section) or mid, media, claimed))
        answer = await self._answer()
        return {
            "requiresImmediateRenegotiation": False,
            "sessionDescription": {"type": "answer", "sdp": answer},
            "tracks": results,
        }

    def _publish_one(
        self, mid: str, name: str, media: dict[str, sdp.MediaDescription], claimed: set[str | None]
    ) -> dict[str, Any]:
        echo: dict[str, Any] = {"location": "local", "mid": mid, "trackName": name}
        section = media.get(mid)
        transceiver = self._transceiver(mid)
        track = transceiver.receiver.track if transceiver is not None else None
        if name in self.published:
            return failed_item(echo, "repeated_local_track_error", f"this session already publishes {name!r}")
        if section is None:
            return failed_item(
                echo, "not_found_track_error", f"the offer has no media section with mid {mid!r}"
            )
        if section.kind != "audio":
            return failed_item(echo, "not_found_track_error", "the stand-in relays audio only")
        if mid in claimed:
            return failed_item(
                echo, "repeated_local_track_error", f"mid {mid!r} already carries another track"
            )
        if section.direction not in _SENDING:
            return failed_item(echo, "not_found_track_error", f"mid {mid!r} does not send in the offer")
        if transceiver is None or transceiver.stopped or track is None:
            return failed_item(echo, "not_found_track_error", f"mid {mid!r} was closed: publish on a new one")
        transceiver.direction = "recvonly"
        # A real SFU forwards packets as they come; aiortc's receiver would hold 80 ms of them.
        shorten_jitter_buffer(transceiver.receiver)
        published = PublishedTrack(self.id, name, transceiver.receiver)
        self.published[name] = published
        self._entries.append(TrackEntry("local", name, transceiver, published))
        claimed.add(mid)
        return echo

    def _pull_offered(
        self, item: TrackIn, media: dict[str, sdp.MediaDescription], claimed: set[str | None]
    ) -> dict[str, Any]:
        """A pull inside a call that carries the client's offer: it needs a recvonly section there."""
        echo = remote_echo(item)
        try:
            source = self._lookup(item.sessionId or "", item.trackName or "")
        except TrackRefused as refused:
            return failed_item(echo, refused.code, refused.description)
        mid = item.mid or next(
            (
                m
                for m, s in media.items()
                if s.kind == "audio" and s.direction == "recvonly" and m not in claimed
            ),
            None,
        )
        section = media.get(mid) if mid is not None else None
        transceiver = self._transceiver(mid) if mid is not None else None
        if (
            section is None
            or section.kind != "audio"
            or section.direction != "recvonly"
            or mid in claimed
            or transceiver is None
            or transceiver.stopped
        ):
            return failed_item(
                echo,
                "not_found_track_error",
                "the offer has no free recvonly audio section for this pull; pull without an offer "
                "to get the SFU's offer instead",
            )
        relay = source.subscribe()
        transceiver.sender.replaceTrack(relay)
        transceiver.direction = "sendonly"
        self._entries.append(TrackEntry("remote", source.name, transceiver, source, relay))
        claimed.add(mid)
        echo["mid"] = mid
        return echo

    # -- SDP ------------------------------------------------------------------------------------

    async def _apply_offer(self, offer: str) -> dict[str, sdp.MediaDescription]:
        """Set the client's offer; its audio/video sections by mid."""
        try:
            parsed = sdp.SessionDescription.parse(offer)
            await self._pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            self._numbering.learn(parsed)
        except _SDP_ERRORS as exc:
            self.check_open()
            raise invalid_description(f"the offer was refused: {exc}") from exc
        return {m.rtp.muxId: m for m in parsed.media if m.kind in ("audio", "video") and m.rtp.muxId}

    async def _answer(self) -> str:
        claimed = {entry.mid for entry in self._entries if not entry.closed}
        for transceiver in self._pc.getTransceivers():
            if transceiver.mid not in claimed:
                transceiver.direction = "inactive"  # media nobody asked for (see module docstring)
        await self._pc.setLocalDescription(await self._pc.createAnswer())  # gathers: no trickle ICE
        return str(self._pc.localDescription.sdp)

    def _transceiver(self, mid: str) -> RTCRtpTransceiver | None:
        return next((t for t in self._pc.getTransceivers() if t.mid == mid), None)

    def _open_entry(self, mid: str) -> TrackEntry | None:
        return next((e for e in self._entries if e.mid == mid and not e.closed), None)

    # -- state ----------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """GET session: every track, closed ones `inactive`; no data channels here."""
        return {"tracks": [entry.describe() for entry in self._entries], "dataChannels": []}

    def report(self) -> dict[str, Any]:
        """The test hook's view: connection, negotiation and media counters."""
        tracks = []
        for entry in self._entries:
            item = entry.describe()
            if entry.relay is not None:
                item["framesSent"] = entry.relay.frames_sent
            else:
                item["framesReceived"] = entry.source.frames_received
                item["bytesReceived"] = entry.source.bytes_received
                item["pullers"] = entry.source.pullers
            tracks.append(item)
        return {
            "sessionId": self.id,
            "state": self.state.value,
            "closed": self.state is SessionState.CLOSED,
            "closeReason": self.close_reason,
            "connectionState": self.connection_state,
            "pendingOffer": self._pending_offer,
            "mutating": self._busy,
            "tracks": tracks,
        }

    def _on_connection_state(self) -> None:
        self._changed.set()
        if self._pc.connectionState in ("failed", "closed"):
            self.close_soon(f"connection {self._pc.connectionState}")

    # -- lifecycle ------------------------------------------------------------------------------

    def close_soon(self, reason: str) -> None:
        """Close from an aiortc callback, which cannot await."""
        if self._closing is None and self.state is SessionState.OPEN:
            self._closing = asyncio.create_task(self.aclose(reason), name=f"sfu-close:{self.id}")

    async def aclose(self, reason: str = "closed") -> None:
        """Stop its tracks (pullers of them stop getting media) and its connection; idempotent."""
        if self.state is SessionState.CLOSED:
            await self._closed.wait()
            return
        self.state = SessionState.CLOSED
        self.close_reason = reason
        self.closed_at = time.monotonic()
        self._changed.set()
        for entry in self._entries:
            if entry.relay is not None:
                entry.relay.stop()
            elif not entry.closed:
                await entry.source.aclose()
        self.published.clear()
        await self._pc.close()
        self._closed.set()
        log.info("session %s closed (%s)", self.id, reason)

    @property
    def finished(self) -> bool:
        """Closed, and its connection too."""
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        if self._closing is not None:
            await asyncio.gather(self._closing, return_exceptions=True)
