"""Request bodies of the SFU API as the stand-in reads them, and their checks.

Unknown fields are ignored (`bidirectionalMediaStream`, `simulcast`, `kind` ...), as a real
server would accept a client newer than itself. A body that is not JSON is `decoding_error`; one
of the wrong shape is `invalid_params` naming the first wrong field (`tracks[1].trackName`).
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from parley.standins.sfu.errors import SFUError, invalid_params

#: the most tracks one call may carry (Cloudflare's documented limit)
MAX_TRACKS = 64
#: request bodies above this are refused with 413 (SDP for 64 tracks stays far below it)
MAX_BODY_BYTES = 1 << 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SessionDescriptionIn(_Body):
    type: Literal["offer", "answer"]
    sdp: str = Field(min_length=1)


class TrackIn(_Body):
    location: Literal["local", "remote"] | None = None
    mid: str | None = None
    sessionId: str | None = None
    trackName: str | None = None


class NewSessionIn(_Body):
    sessionDescription: SessionDescriptionIn | None = None


class TracksNewIn(_Body):
    sessionDescription: SessionDescriptionIn | None = None
    tracks: list[TrackIn] = Field(default_factory=list, max_length=MAX_TRACKS)
    autoDiscover: StrictBool = False


class RenegotiateIn(_Body):
    sessionDescription: SessionDescriptionIn


class CloseTrackIn(_Body):
    mid: str


class TracksCloseIn(_Body):
    tracks: list[CloseTrackIn] = Field(min_length=1, max_length=MAX_TRACKS)
    force: StrictBool
    sessionDescription: SessionDescriptionIn | None = None


_Model = TypeVar("_Model", bound=BaseModel)


def decode(raw: bytes) -> Any:
    """The JSON of a body; an empty body is an empty object (sessions/new is sent without one)."""
    if len(raw) > MAX_BODY_BYTES:
        raise SFUError(413, "payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SFUError(400, "decoding_error", f"the body is not JSON ({exc})") from exc


def parse(model: type[_Model], data: Any) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise invalid_params(_field(error["loc"]), error["msg"]) from exc


def checked_tracks_new(body: TracksNewIn) -> TracksNewIn:
    """The shape checks pydantic cannot say alone: what each location needs."""
    offer = body.sessionDescription
    if offer is not None and offer.type != "offer":
        raise SFUError(400, "invalid_session_description", "tracks/new takes an offer, not an answer")
    if not body.tracks and not (body.autoDiscover and offer is not None):
        raise invalid_params("tracks", "at least one track is needed (or autoDiscover with an offer)")
    for i, track in enumerate(body.tracks):
        if track.location is None:
            raise invalid_params(f"tracks[{i}].location", 'must be "local" or "remote"')
        if not track.trackName:
            raise invalid_params(f"tracks[{i}].trackName", "is required")
        if track.location == "local":
            if offer is None:
                raise invalid_params("sessionDescription", "an offer is needed to publish local tracks")
            if not track.mid:
                raise invalid_params(f"tracks[{i}].mid", "a local track names the mid of its transceiver")
        elif not track.sessionId:
            raise invalid_params(f"tracks[{i}].sessionId", "a remote track names the session publishing it")
    return body


def checked_close(body: TracksCloseIn) -> TracksCloseIn:
    offer = body.sessionDescription
    if offer is not None and offer.type != "offer":
        raise SFUError(400, "invalid_session_description", "tracks/close takes an offer, not an answer")
    if not body.force and offer is None:
        raise invalid_params("sessionDescription", "force=false needs an offer that stops those tracks")
    return body


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"
