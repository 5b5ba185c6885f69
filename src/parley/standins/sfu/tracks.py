"""TrackEntry: one track of a session, as GET session lists it; and the item shapes of replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aiortc import RTCRtpTransceiver, sdp

from parley.standins.sfu.relay import PublishedTrack, RelayTrack
from parley.standins.sfu.wire import TrackIn


@dataclass(eq=False, slots=True)
class TrackEntry:
    """A track of this session: one it publishes (`local`) or one it pulls (`remote`)."""

    location: Literal["local", "remote"]
    name: str
    transceiver: RTCRtpTransceiver
    #: local: what this session publishes; remote: the track pulled from its publisher
    source: PublishedTrack
    relay: RelayTrack | None = None
    negotiated: bool = True
    closed: bool = False

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    def status(self) -> str:
        if self.closed or self.source.ended:
            return "inactive"
        if not self.negotiated or not self.source.has_media:
            return "initializing"
        return "active"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"location": self.location, "mid": self.mid, "trackName": self.name}
        if self.location == "remote":
            out["sessionId"] = self.source.session_id
        out["status"] = self.status()
        return out

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.relay is not None:
            self.relay.stop()
        else:
            await self.source.aclose()
        await self.transceiver.stop()
        self.transceiver.direction = "inactive"


def remote_echo(item: TrackIn) -> dict[str, Any]:
    return {"location": "remote", "sessionId": item.sessionId, "trackName": item.trackName}


def failed_item(echo: dict[str, Any], code: str, description: str) -> dict[str, Any]:
    return {**echo, "errorCode": code, "errorDescription": description}


def msid_track(section: sdp.MediaDescription) -> str | None:
    """The track id of `a=msid:<stream> <track>`, the name autoDiscover gives a track."""
    parts = (section.msid or "").split()
    return parts[1] if len(parts) == 2 else None
