"""Wire models of the Cloudflare Realtime SFU API (`realtime-api-2024-05-21`), named as on the wire.

Field names stay camelCase so a model dumps to exactly the JSON the API documents. Replies keep
fields this module does not know (`extra="allow"`): the API is young and adds fields, and a proxy
that forwards a reply to a browser should not silently drop them. Requests are dumped with
`exclude_none=True`, so an unset optional field is absent rather than `null`.

Replies carry errors as data: a top-level `errorCode`/`errorDescription` for the whole call and,
on HTTP 200, per-item ones inside `tracks` or `dataChannels`. The client turns both into exceptions;
the models only carry them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def wire(self) -> dict[str, Any]:
        """The JSON body for this model: unset fields are left out, not sent as null."""
        return self.model_dump(mode="json", exclude_none=True)


class SessionDescription(_Wire):
    type: Literal["offer", "answer"]
    sdp: str


class Track(_Wire):
    """A track in a request or reply.

    `location="local"` publishes from this session; `"remote"` pulls `trackName` from the session
    `sessionId`. `mid` is the transceiver's mid (or `"#<trackName>"`); `kind` is needed when the
    SFU makes the offer. Replies add `status` (GET session) or `errorCode` (a failed item).
    """

    location: Literal["local", "remote"] | None = None
    mid: str | None = None
    sessionId: str | None = None
    trackName: str | None = None
    kind: str | None = None
    bidirectionalMediaStream: bool | None = None
    simulcast: dict[str, Any] | None = None
    status: str | None = None
    errorCode: str | None = None
    errorDescription: str | None = None


class DataChannel(_Wire):
    """A data channel; the reply's `id` is what the peer passes to `createDataChannel(negotiated=True)`."""

    location: Literal["local", "remote"] | None = None
    dataChannelName: str | None = None
    sessionId: str | None = None
    id: int | None = None
    errorCode: str | None = None
    errorDescription: str | None = None


class NewSessionReply(_Wire):
    sessionId: str
    #: only when the session was created with an offer (the older form of sessions/new)
    sessionDescription: SessionDescription | None = None
    errorCode: str | None = None
    errorDescription: str | None = None


class TracksReply(_Wire):
    """The reply of tracks/new, tracks/update and tracks/close.

    When `requiresImmediateRenegotiation` is true, `sessionDescription` is an SFU offer that must be
    answered (PUT renegotiate) before any other change to the session.
    """

    requiresImmediateRenegotiation: bool = False
    sessionDescription: SessionDescription | None = None
    tracks: list[Track] = Field(default_factory=list)
    errorCode: str | None = None
    errorDescription: str | None = None


class SessionState(_Wire):
    """GET session: every track with its `status` (active, inactive, initializing)."""

    tracks: list[Track] = Field(default_factory=list)
    dataChannels: list[DataChannel] = Field(default_factory=list)
    errorCode: str | None = None
    errorDescription: str | None = None


class DataChannelsReply(_Wire):
    dataChannels: list[DataChannel] = Field(default_factory=list)
    errorCode: str | None = None
    errorDescription: str | None = None


# -- request bodies ------------------------------------------------------------------------------


class NewSessionRequest(_Wire):
    """The older form of sessions/new, which takes an offer and answers it."""

    sessionDescription: SessionDescription


class TracksRequest(_Wire):
    """The body of tracks/new and tracks/update."""

    tracks: list[Track]
    sessionDescription: SessionDescription | None = None
    autoDiscover: bool | None = None


class RenegotiateRequest(_Wire):
    sessionDescription: SessionDescription


class CloseTracksRequest(_Wire):
    tracks: list[Track]
    #: required by the API: true closes at once without an SDP exchange
    force: bool
    sessionDescription: SessionDescription | None = None


class DataChannelsRequest(_Wire):
    dataChannels: list[DataChannel]
