"""WebRTC signalling for voice calls, and the Prometheus metrics of those calls.

GET /api/ice      the ICE servers browsers should use: {"iceServers": [...], "mode", "warning"?: str};
                  with a TURN key, fresh short-lived credentials on every request (never cached);
                  `mode` is how calls go: "direct" (/api/offer) or "cloudflare" (/api/sfu, web/sfu.py)
POST /api/offer   {sdp, type: "offer", sessionId} -> {sdp, type: "answer", callId}
POST /api/hangup  {callId} -> {callId, closed: true}
GET /metrics      Prometheus text format

One round trip, no trickle ICE: the server's answer already holds all of its candidates, so the
browser should also wait for its ICE gathering to complete before posting the offer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from parley import metrics
from parley.services import Services
from parley.web import schemas
from parley.web.body import read_json, validate
from parley.web.limits import client_address, count
from parley.web.schemas import language_field
from parley.web.users import current_user, owned_session, spend

if TYPE_CHECKING:
    from parley.rtc.registry import CallRegistry

router = APIRouter()

#: an SDP offer with audio and a data channel is 2-6 KB; leave room for many candidates
MAX_SDP_CHARS = 32768


class OfferIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    type: Literal["offer"]
    sessionId: str
    language: str | None = language_field(
        "The language the user speaks (`en`, `de`); unset lets speech-to-text detect it."
    )


class HangupIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    callId: str = Field(min_length=1, max_length=64)


def calls(request: Request) -> CallRegistry:
    registry: CallRegistry = request.app.state.services.calls
    return registry


@router.get(
    "/api/ice",
    responses=schemas.ERRORS,
    summary="ICE servers (STUN/TURN) for the browser's RTCPeerConnection",
)
async def ice(request: Request, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "no-store"
    await count(request, "ice")
    await spend(request, "ice")
    body = (await calls(request).ice_for_call()).to_browser()
    body["mode"] = "cloudflare" if calls(request).realtime is not None else "direct"
    return body


@router.post(
    "/api/offer",
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(OfferIn),
    summary="Start a voice call: the browser's SDP offer in, the answer out",
)
async def offer(request: Request) -> dict[str, Any]:
    body = validate(OfferIn, await read_json(request, limit=MAX_SDP_CHARS * 2 + 1024))
    key = owned_session(request, body.sessionId)
    await count(request, "offer")
    await spend(request, "calls")
    call_id, answer = await calls(request).open(
        key, body.sdp, language=body.language, client=client_address(request)
    )
    return {"sdp": answer, "type": "answer", "callId": call_id}


@router.post(
    "/api/hangup",
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(HangupIn),
    summary="End a voice call",
)
async def hangup(request: Request) -> dict[str, Any]:
    body = validate(HangupIn, await read_json(request, limit=4096))
    # only its owner may hang a call up; anyone else is told there is no such call
    # on whichever node holds the call's media
    svc: Services = request.app.state.services
    await svc.call_directory.hangup(body.callId, owner=current_user(request).id)
    return {"callId": body.callId, "closed": True}


@router.get("/metrics", include_in_schema=False)  # admins or PARLEY_METRICS_TOKEN (web/auth.py)
async def prometheus() -> Response:
    text, content_type = metrics.render()
    return Response(text, media_type=content_type)
