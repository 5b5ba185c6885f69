"""Cloudflare mode: the browser's way to the Cloudflare Realtime SFU, through Parley.

The browser never holds the app secret. It calls these endpoints, which mirror the SFU API's
paths and bodies (so its code reads like any Cloudflare Realtime client); Parley checks them,
adds the secret and forwards them with the same client (and per-session FIFO) the assistant uses.

POST /api/sfu/sessions/new                  -> 201 {sessionId, token}
POST /api/sfu/sessions/{sid}/tracks/new     {sessionDescription?, tracks}   (the SFU's reply)
PUT  /api/sfu/sessions/{sid}/renegotiate    {sessionDescription: answer}    -> {}
PUT  /api/sfu/sessions/{sid}/tracks/close   {tracks: [{mid}], force, sessionDescription?}
GET  /api/sfu/sessions/{sid}                                                 (the SFU's reply)
POST /api/sfu/calls                         {sessionId, sfuSessionId, trackName}
                                            -> 201 {callId, callToken, sfuSessionId, trackName}
PUT  /api/sfu/calls/{callId}/mic            {sfuSessionId, trackName}        -> {callId, sfuSessionId, trackName}

Locks: `token` (header X-Parley-Token) unlocks only the SFU session it was issued with, so one
browser cannot pull into, close or renegotiate another's session. A browser may pull only the
assistant's voice of its own calls (never another browser's mic), and `autoDiscover` (pull every
track of the app) is refused. Moving a call's mic to a new session (the browser recovered) needs
both that session's token and the call's (X-Parley-Call-Token). Per-item track errors come back
as the SFU sends them (HTTP 200, `errorCode` on the item), as a browser client expects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from parley.errors import Forbidden, InvalidInput, NotFound
from parley.rtc.cloudflare import SessionDescription, Track, TrackError
from parley.rtc.tokens import TokenSigner
from parley.services import Services
from parley.web import schemas
from parley.web.body import read_json, validate
from parley.web.limits import client_address, count
from parley.web.rtc import MAX_SDP_CHARS, calls
from parley.web.users import current_user, owned_session, spend

if TYPE_CHECKING:
    from parley.rtc.cloudflare import CloudflareRealtimeClient

router = APIRouter(prefix="/api/sfu")

TOKEN_HEADER = "X-Parley-Token"
CALL_TOKEN_HEADER = "X-Parley-Call-Token"
#: the SFU's own limit per call
MAX_TRACKS = 64
_ID = r"^[A-Za-z0-9_-]{1,128}$"
_NAME = r"^[A-Za-z0-9_.:#-]{1,64}$"
_BODY_LIMIT = MAX_SDP_CHARS * 2 + 64 * 1024
#: every route also answers 403 (a token that is not this browser's, a track it may not pull)
_ERRORS = schemas.FORBIDDEN_ERRORS


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SDPIn(_In):
    type: Literal["offer", "answer"]
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)


class TrackIn(_In):
    location: Literal["local", "remote"]
    mid: str | None = Field(None, max_length=64)
    sessionId: str | None = Field(None, pattern=_ID)
    trackName: str | None = Field(None, pattern=_NAME)
    kind: Literal["audio", "video"] | None = None


class TracksNewIn(_In):
    sessionDescription: SDPIn | None = None
    tracks: list[TrackIn] = Field(min_length=1, max_length=MAX_TRACKS)
    autoDiscover: bool | None = None


class RenegotiateIn(_In):
    sessionDescription: SDPIn


class MidIn(_In):
    mid: str = Field(min_length=1, max_length=64)


class CloseIn(_In):
    tracks: list[MidIn] = Field(min_length=1, max_length=MAX_TRACKS)
    force: bool
    sessionDescription: SDPIn | None = None


class CallIn(_In):
    sessionId: str
    sfuSessionId: str = Field(pattern=_ID)
    trackName: str = Field(pattern=_NAME)


class MicIn(_In):
    sfuSessionId: str = Field(pattern=_ID)
    trackName: str = Field(pattern=_NAME)


def _realtime(request: Request) -> CloudflareRealtimeClient:
    client = calls(request).realtime
    if client is None:
        raise NotFound(
            "Cloudflare mode is off on this server (PARLEY_RTC=direct): use /api/offer",
            field="PARLEY_RTC",
        )
    return client


def _tokens(request: Request) -> TokenSigner:
    signer: TokenSigner = request.app.state.services.tokens
    return signer


def _locked(request: Request, ident: str) -> str:
    """What a token locks: the id, and the user it was issued to (another user's token is no key)."""
    return f"{current_user(request).id}/{ident}"


def _own(request: Request, sid: str) -> str:
    """`sid`, once the request's token proves it is this browser's (and this user's) session."""
    _realtime(request)
    _tokens(request).require(
        "sfu-session", _locked(request, sid), request.headers.get(TOKEN_HEADER), field=TOKEN_HEADER
    )
    return sid


def _sdp(body: SDPIn | None, expected: str, field: str) -> SessionDescription | None:
    if body is None:
        return None
    if body.type != expected:
        raise InvalidInput(f"{field}.type must be {expected!r} here", field=f"{field}.type", limit=expected)
    return SessionDescription(type=body.type, sdp=body.sdp)


def _reply(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True), status_code=status)


@router.post(
    "/sessions/new", status_code=201, responses=_ERRORS, summary="Open an SFU session for this browser"
)
async def new_session(request: Request) -> JSONResponse:
    _realtime(request)
    await spend(request, "ice")  # an SFU session is a media relay on the operator's account
    reply = await _realtime(request).new_session()
    token = _tokens(request).issue("sfu-session", _locked(request, reply.sessionId))
    return JSONResponse({"sessionId": reply.sessionId, "token": token}, status_code=201)


@router.post(
    "/sessions/{sid}/tracks/new",
    responses=_ERRORS,
    openapi_extra=schemas.json_body(TracksNewIn),
    summary="Publish the mic, or pull the assistant's voice",
)
async def new_tracks(sid: str, request: Request) -> JSONResponse:
    _own(request, sid)
    body = validate(TracksNewIn, await read_json(request, limit=_BODY_LIMIT))
    if body.autoDiscover:
        raise Forbidden("autoDiscover would pull every track of the app", field="autoDiscover")
    svc: Services = request.app.state.services
    for i, track in enumerate(body.tracks):
        if track.location == "local":
            if body.sessionDescription is None:
                raise InvalidInput(
                    "publishing a track needs the offer that carries it", field="sessionDescription"
                )
            if not track.mid or not track.trackName:
                raise InvalidInput("a local track needs mid and trackName", field=f"tracks.{i}")
            continue
        if not track.sessionId or not track.trackName:
            raise InvalidInput("a remote track needs sessionId and trackName", field=f"tracks.{i}")
        # on any node: the call's node recorded which browser session may pull its voice
        if not await svc.call_directory.may_pull(sid, track.sessionId):
            raise Forbidden(
                "this session may pull only the assistant's voice of its own calls",
                field=f"tracks.{i}.sessionId",
            )
    tracks = [Track(**t.model_dump(exclude_none=True)) for t in body.tracks]
    try:
        reply = await _realtime(request).new_tracks(
            sid, tracks, offer=_sdp(body.sessionDescription, "offer", "sessionDescription")
        )
    except TrackError as exc:
        reply = exc.reply  # per item, as the SFU answers: the browser's client reads each item
    return _reply(reply)


@router.put(
    "/sessions/{sid}/renegotiate",
    responses=_ERRORS,
    openapi_extra=schemas.json_body(RenegotiateIn),
    summary="Answer the SFU's offer (after a pull)",
)
async def renegotiate(sid: str, request: Request) -> JSONResponse:
    _own(request, sid)
    body = validate(RenegotiateIn, await read_json(request, limit=_BODY_LIMIT))
    answer = _sdp(body.sessionDescription, "answer", "sessionDescription")
    assert answer is not None
    await _realtime(request).renegotiate(sid, answer)
    return JSONResponse({})


@router.put(
    "/sessions/{sid}/tracks/close",
    responses=_ERRORS,
    openapi_extra=schemas.json_body(CloseIn),
    summary="Stop tracks of this browser's session",
)
async def close_tracks(sid: str, request: Request) -> JSONResponse:
    _own(request, sid)
    body = validate(CloseIn, await read_json(request, limit=_BODY_LIMIT))
    try:
        reply = await _realtime(request).close_tracks(
            sid,
            [t.mid for t in body.tracks],
            force=body.force,
            offer=_sdp(body.sessionDescription, "offer", "sessionDescription"),
        )
    except TrackError as exc:
        reply = exc.reply
    return _reply(reply)


@router.get("/sessions/{sid}", responses=_ERRORS, summary="The tracks of this browser's session")
async def get_session(sid: str, request: Request) -> JSONResponse:
    _own(request, sid)
    return _reply(await _realtime(request).get_session(sid))


@router.post(
    "/calls",
    status_code=201,
    responses=_ERRORS,
    openapi_extra=schemas.json_body(CallIn),
    summary="Start the assistant on this browser's mic track",
)
async def start_call(request: Request) -> JSONResponse:
    body = validate(CallIn, await read_json(request, limit=4096))
    key = owned_session(request, body.sessionId)
    _own(request, body.sfuSessionId)
    from parley.rtc.sfu_peer import TrackRef

    await count(request, "offer")
    await spend(request, "calls")
    peer = await calls(request).open_sfu(
        key, TrackRef(body.sfuSessionId, body.trackName), client=client_address(request)
    )
    voice = peer.voice
    if voice is None:  # closed again before we could answer (shutdown, hang-up)
        raise NotFound("the call ended while it was starting", field="callId")
    # recorded before the browser hears of the voice: its pull may reach any node
    await request.app.state.services.call_directory.voice_ready(peer.id)
    return JSONResponse(
        {
            "callId": peer.id,
            "callToken": _tokens(request).issue("call", _locked(request, peer.id)),
            "sfuSessionId": voice.session_id,
            "trackName": voice.track_name,
        },
        status_code=201,
    )


@router.put(
    "/calls/{call_id}/mic",
    responses=_ERRORS,
    openapi_extra=schemas.json_body(MicIn),
    summary="The browser publishes its mic from a new SFU session",
)
async def move_mic(call_id: str, request: Request) -> JSONResponse:
    body = validate(MicIn, await read_json(request, limit=4096))
    _tokens(request).require(
        "call", _locked(request, call_id), request.headers.get(CALL_TOKEN_HEADER), field=CALL_TOKEN_HEADER
    )
    _own(request, body.sfuSessionId)
    from parley.rtc.sfu_peer import TrackRef

    svc: Services = request.app.state.services
    # on whichever node holds the call
    voice = await svc.call_directory.move_mic(call_id, TrackRef(body.sfuSessionId, body.trackName))
    out: dict[str, Any] = {"callId": call_id, "sfuSessionId": body.sfuSessionId, "trackName": body.trackName}
    if voice:
        out["voice"] = voice
    return JSONResponse(out)
