"""The stand-in's HTTP API: Cloudflare Realtime SFU paths, bodies, status codes and error objects.

    POST /v1/apps/{appId}/sessions/new                    -> 201 {sessionId[, sessionDescription]}
    POST /v1/apps/{appId}/sessions/{sid}/tracks/new       -> 200 {requiresImmediateRenegotiation, ...}
    PUT  /v1/apps/{appId}/sessions/{sid}/renegotiate      -> 200 {}
    PUT  /v1/apps/{appId}/sessions/{sid}/tracks/close     -> 200 {requiresImmediateRenegotiation, tracks}
    GET  /v1/apps/{appId}/sessions/{sid}                  -> 200 {tracks: [... status], dataChannels: []}
    PUT  .../tracks/update, POST .../datachannels/new, PUT .../datachannels/close -> 400 (not here)

Test and development hooks, outside /v1 and behind the same bearer secret:

    GET  /_standin/sessions              -> {"sessions": [{sessionId, state, connectionState, tracks
                                             with framesReceived/bytesReceived or framesSent, ...}]}
    POST /_standin/sessions/{sid}/drop   -> closes the session's peer connection at once; later
                                             calls on it answer 410, its pullers stop getting media

Every error is `{"errorCode", "errorDescription"}`: 400 decoding_error / invalid_params /
invalid_session_description, 401 unauthorized, 404 not_found, 406 session_error (a concurrent
mutation, or one before the pending offer's answer), 410 session_error (closed), 413
payload_too_large, 425 session_error (not connected after `connect_timeout`). Track errors are
items inside a 200 (see `sessions.py`).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from parley.standins import realtime
from parley.standins.common import init_state
from parley.standins.sfu.errors import SFUError, invalid_description
from parley.standins.sfu.registry import SFU
from parley.standins.sfu.sessions import Session
from parley.standins.sfu.wire import (
    NewSessionIn,
    RenegotiateIn,
    TracksCloseIn,
    TracksNewIn,
    checked_close,
    checked_tracks_new,
    decode,
    parse,
)

_Model = TypeVar("_Model", bound=BaseModel)


def error_response(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse({"errorCode": code, "errorDescription": description}, status_code=status)


def create_app(
    *,
    app_id: str,
    app_secret: str,
    connect_timeout: float = 5.0,
    turn_key_id: str | None = None,
    turn_token: str | None = None,
) -> Starlette:
    """The SFU stand-in for one app; clients use `<server url>/v1` as the API base URL.

    `connect_timeout` is how long a pull waits for its session's peer to be connected before
    answering 425 (Cloudflare: 5 s). `app.state.sfu` holds the sessions.
    """
    sfu = SFU(connect_timeout=connect_timeout)
    expected = f"Bearer {app_secret}".encode()

    def authorize(request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise SFUError(401, "unauthorized", "send Authorization: Bearer <the app's secret>")

    def check_app(request: Request) -> None:
        authorize(request)
        if request.path_params["app_id"] != app_id:
            raise SFUError(404, "not_found", f"no app {request.path_params['app_id']!r}")

    def session_of(request: Request) -> Session:
        check_app(request)
        return sfu.get(request.path_params["session_id"])

    async def body_of(request: Request, model: type[_Model]) -> _Model:
        return parse(model, decode(await request.body()))

    async def new_session(request: Request) -> Response:
        check_app(request)
        body = await body_of(request, NewSessionIn)
        offer = body.sessionDescription
        if offer is not None and offer.type != "offer":
            raise invalid_description("sessions/new takes an offer, not an answer")
        session = sfu.new_session()
        reply: dict[str, Any] = {"sessionId": session.id}
        if offer is not None:
            reply["sessionDescription"] = {"type": "answer", "sdp": await session.answer_initial(offer.sdp)}
        return JSONResponse(reply, status_code=201)

    async def tracks_new(request: Request) -> Response:
        session = session_of(request)
        body = checked_tracks_new(await body_of(request, TracksNewIn))
        return JSONResponse(await session.add_tracks(body))

    async def renegotiate(request: Request) -> Response:
        session = session_of(request)
        body = await body_of(request, RenegotiateIn)
        if body.sessionDescription.type != "answer":
            raise invalid_description("renegotiate takes the answer to the session's offer")
        await session.renegotiate(body.sessionDescription.sdp)
        return JSONResponse({})

    async def tracks_close(request: Request) -> Response:
        session = session_of(request)
        body = checked_close(await body_of(request, TracksCloseIn))
        return JSONResponse(await session.close_tracks(body))

    async def not_here(request: Request) -> Response:
        session_of(request)
        action = request.url.path.rsplit("/", 2)
        raise SFUError(
            400,
            "invalid_params",
            f"{action[-2]}/{action[-1]} is not implemented by the local SFU stand-in "
            "(it implements sessions/new, tracks/new, renegotiate, tracks/close and GET session)",
        )

    async def get_session(request: Request) -> Response:
        return JSONResponse(session_of(request).describe())

    async def list_sessions(request: Request) -> Response:
        authorize(request)
        return JSONResponse({"sessions": [s.report() for s in sfu.sessions()]})

    async def drop_session(request: Request) -> Response:
        authorize(request)
        session = sfu.find(request.path_params["session_id"])
        await session.aclose("dropped")
        return JSONResponse({"sessionId": session.id, "closed": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sfu.aclose()

    session_path = "/v1/apps/{app_id}/sessions/{session_id}"
    # With a TURN key, the TURN key API too, as Cloudflare serves both under one base URL.
    turn = (
        realtime.create_app(turn_key_id=turn_key_id, turn_token=turn_token).routes
        if turn_key_id and turn_token
        else []
    )
    app = Starlette(
        routes=[
            *turn,
            Route("/v1/apps/{app_id}/sessions/new", new_session, methods=["POST"]),
            Route(session_path, get_session, methods=["GET"]),
            Route(f"{session_path}/tracks/new", tracks_new, methods=["POST"]),
            Route(f"{session_path}/renegotiate", renegotiate, methods=["PUT"]),
            Route(f"{session_path}/tracks/close", tracks_close, methods=["PUT"]),
            Route(f"{session_path}/tracks/update", not_here, methods=["PUT"]),
            Route(f"{session_path}/datachannels/new", not_here, methods=["POST"]),
            Route(f"{session_path}/datachannels/close", not_here, methods=["PUT"]),
            Route("/_standin/sessions", list_sessions, methods=["GET"]),
            Route("/_standin/sessions/{session_id}/drop", drop_session, methods=["POST"]),
        ],
        exception_handlers={
            SFUError: _sfu_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.sfu = sfu
    init_state(app.state)  # what the TURN routes record (requests, issued credentials)
    app.state.issued = {}
    return app


async def _sfu_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SFUError)
    return error_response(exc.status, exc.code, exc.description)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own 404 (no such route) and 405 (wrong method), in the API's error shape
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "invalid_params"
    return error_response(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", f"the stand-in failed: {exc!r}")
