"""The session WebSocket: every event of a session to every socket of it, and a few commands back.

Client -> server: `{"type":"ping"}`, `{"type":"chat","message":...,"language"?,"clientId"?,"editOf"?}`,
`{"type":"stop","turnId"?}`. A `clientId` (<= 64 chars) is echoed in the `user_message` or `error`
event that answers the frame, so a client can tell which of its sends an error is about.
Server -> client: `connected`, `pong`, and the session events of `sessions/events.py`, each
with its bus `eventId`; a client reconnecting with `?after=<eventId>` gets what it missed (its
`connected` says `resumed`, false when the bus no longer keeps that event: reload the history).
Beside them every socket of a user hears the user's `conversations` events (a conversation
created, renamed, deleted or updated, whichever conversation the socket is on), from its
`connected` on and without an `eventId`: they are not part of the session's resume, and a client
that reconnects reloads the list instead. A bad frame
gets an `error` event naming the field; only an oversized frame, a socket too slow to keep up, or
one the server cannot write to (1011) closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from parley.bus.base import Subscription, parse_id
from parley.config import Settings
from parley.errors import Busy, InvalidInput, ParleyError, PayloadTooLarge
from parley.language import check_language
from parley.services import Services
from parley.sessions import events
from parley.sessions.keys import SessionKey, owner_of, public_id
from parley.sessions.registry import check_session_id
from parley.web.body import parse_json, require_text, transport_limit
from parley.web.errors import (
    WS_INTERNAL_ERROR,
    WS_MESSAGE_TOO_BIG,
    WS_POLICY_VIOLATION,
    WS_TRY_AGAIN_LATER,
    error_body,
    error_response,
)
from parley.web.limits import count
from parley.web.users import edited_message, live_session, owned_session, spend

router = APIRouter()
log = logging.getLogger("parley.ws")

CLIENT_TYPES = ("ping", "chat", "stop")
#: the conversation was deleted (DELETE /api/sessions/{id}): the socket closes after the event
WS_DELETED = 4404
_DELETED = events.deleted("").data.partition(",")[0]


@router.get("/ws", include_in_schema=False)
async def ws_over_http(request: Request) -> JSONResponse:
    """The seed's answers to a plain GET: 400 without a session id, else 426."""
    try:
        check_session_id(request.query_params.get("sessionId"))
    except ParleyError as exc:
        return JSONResponse(exc.to_dict(), status_code=400)
    return JSONResponse(
        {"error": "Expected Upgrade: websocket", "code": "upgrade_required", "status": 426},
        status_code=426,
        headers={"Upgrade": "websocket"},
    )


@router.websocket("/ws")
async def ws_endpoint(websocket: WebSocket) -> None:
    svc: Services = websocket.app.state.services
    try:
        # The Origin of the handshake and its user were checked before it got here (web/origins.py,
        # web/auth.py); the session id is scoped to that user.
        key = owned_session(websocket, websocket.query_params.get("sessionId"))
        after = websocket.query_params.get("after") or None
        if after is not None:
            parse_id(after)  # InvalidInput naming `after`: refused before the upgrade
        owner = owner_of(key)
        limit = svc.settings.max_sockets_per_user
        if svc.sockets[owner] >= limit:
            raise Busy(
                f"this user has {limit} sockets open, the most allowed (PARLEY_MAX_SOCKETS_PER_USER)",
                field="sockets",
                limit=limit,
            )
        if key not in svc.sessions:
            # a socket on a session that is not live makes one, which stays until it idles out
            await count(websocket, "new session")
        await live_session(websocket, key)
    except ParleyError as exc:
        await _deny(websocket, exc)
        return
    svc.sockets[owner] += 1
    try:
        await _serve_socket(websocket, svc, key, after)
    finally:
        svc.sockets[owner] -= 1
        if svc.sockets[owner] <= 0:
            del svc.sockets[owner]


async def _serve_socket(websocket: WebSocket, svc: Services, key: SessionKey, after: str | None) -> None:
    session_id = public_id(key)
    session = svc.sessions.get(key)
    await websocket.accept()
    # A socket that resumes (`after`, the id of the last event it saw) gets what it missed from
    # the bus; one joining mid-reply resumes after the reply's user_message, so the bus replays the
    # reply so far and live events follow, with no gap and no duplicate, on any bus.
    mark = session.catch_up_mark() if after is None else None
    # this node follows the session (several nodes: it takes the session if its owner dies)
    await svc.directory.watch(key)
    sub = svc.bus.subscribe(key, after=after or mark)
    # the user's channel: one subscription per socket, so the user's socket limit bounds them too
    user_sub = svc.bus.subscribe(events.user_topic(owner_of(key)))
    writer: asyncio.Task[None] | None = None
    user_writer: asyncio.Task[None] | None = None
    started = time.perf_counter()
    frames = 0
    limit = frame_limit(svc.settings)
    try:
        # the bus no longer keeps the reply's start (a very long reply): its text so far instead,
        # taken with no await after subscribing, so what the inbox gets is what came after it
        caught = session.catch_up() if mark is not None and sub.gap else []
        await sub.ready()
        await user_sub.ready()
        # sent before the writers start, so before anything in the inboxes
        await websocket.send_text(events.connected(session_id, resumed=not sub.gap if after else None).data)
        for event in caught:
            await websocket.send_text(event.data)
        writer = asyncio.create_task(_write(websocket, sub, session_id), name=f"ws-writer:{key}")
        user_writer = asyncio.create_task(
            _write(websocket, user_sub, session_id, with_ids=False), name=f"ws-user-writer:{key}"
        )
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            frames += 1
            raw, size = _frame(message)
            if size > limit:
                await _send_error(
                    websocket,
                    PayloadTooLarge(f"frame is larger than {limit} bytes", field="frame", limit=limit),
                )
                await websocket.close(WS_MESSAGE_TOO_BIG, f"frame larger than {limit} bytes")
                break
            await _handle(websocket, svc, key, raw)
    except WebSocketDisconnect:
        pass
    except Exception:
        # A bug must end this socket with a close frame (the client then reconnects), not
        # leave it to die with the task.
        log.exception("ws session=%s failed; closing the socket", session_id)
        await _close(websocket, WS_INTERNAL_ERROR, "server error; reconnect")
    finally:
        for task in (writer, user_writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        svc.bus.unsubscribe(sub)
        svc.bus.unsubscribe(user_sub)
        svc.directory.unwatch(key)
        log.info(
            "ws session=%s frames=%d duration_ms=%.0f overflowed=%s",
            session_id,
            frames,
            (time.perf_counter() - started) * 1000,
            sub.overflowed,
        )


def frame_limit(settings: Settings) -> int:
    """PARLEY_MAX_WS_FRAME_BYTES, or when unset, room for the longest message in any JSON spelling."""
    configured = settings.max_ws_frame_bytes
    return configured if configured is not None else transport_limit(settings.max_message_chars)


def _frame(message: Any) -> tuple[str, int]:
    text = message.get("text")
    if text is not None:
        return text, len(text.encode("utf-8", "replace"))
    data = message.get("bytes") or b""
    return data.decode("utf-8", "replace"), len(data)


async def _deny(websocket: WebSocket, exc: ParleyError) -> None:
    """Refuse the handshake with the error's HTTP status where the server supports it, else close 1008."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(exc))
    else:
        await websocket.close(WS_POLICY_VIOLATION, exc.message[:120])


async def _write(websocket: WebSocket, sub: Subscription, session_id: str, *, with_ids: bool = True) -> None:
    """A writer of this socket: drains one inbox (the session's, or the user's `with_ids=False`:
    its ids are another topic's, which a resume must not see) so a slow socket only delays itself.

    It never ends silently: an event it cannot send closes the socket (1011), so the client
    reconnects instead of waiting on an open socket that no longer receives anything.
    """
    seen = sub.last_id
    try:
        while True:
            event = await sub.get()
            if not event:
                await websocket.close(WS_TRY_AGAIN_LATER, "client too slow; reconnect")
                return
            if with_ids and sub.last_id != seen:
                # a bus event: its id rides along, so a client that reconnects resumes after it
                seen = sub.last_id
                await websocket.send_text(f'{{"eventId":"{seen}",{event[1:]}')
            else:
                await websocket.send_text(event)
            if event.startswith(_DELETED):
                await websocket.close(WS_DELETED, "conversation deleted")
                return
    except WebSocketDisconnect:
        return  # the client left; the reader sees it too and cleans up
    except Exception:
        log.exception("ws session=%s: cannot send an event; closing the socket", session_id)
        await _close(websocket, WS_INTERNAL_ERROR, "server could not send an event; reconnect")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):  # already closing, or the connection is gone
            await websocket.close(code, reason)


async def _send_error(websocket: WebSocket, exc: ParleyError, client_id: str | None = None) -> None:
    if websocket.client_state is WebSocketState.CONNECTED:
        await websocket.send_text(events.error(error_body(exc), client_id).data)


async def _handle(websocket: WebSocket, svc: Services, key: SessionKey, raw: str) -> None:
    """Act on one client frame; a bad one gets an error event (echoing its clientId) and no change."""
    try:
        data: Any = parse_json(raw, what="frame")
    except InvalidInput as exc:
        await _send_error(websocket, exc)
        return
    client_id = data.get("clientId") if isinstance(data, dict) else None
    if not (isinstance(client_id, str) and 0 < len(client_id) <= 64):
        client_id = None
    try:
        await _command(websocket, svc, key, data, client_id)
    except ParleyError as exc:
        await _send_error(websocket, exc, client_id)


async def _command(
    websocket: WebSocket, svc: Services, key: SessionKey, data: Any, client_id: str | None
) -> None:
    if not isinstance(data, dict):
        raise InvalidInput("frame must be a JSON object with a type", field="type")
    kind = data.get("type")
    if kind == "ping":
        await websocket.send_text(events.PONG.data)
    elif kind == "chat":
        message = require_text(data.get("message"), field="message", limit=svc.settings.max_message_chars)
        language = check_language(data.get("language"))
        edit = await edited_message(websocket, key, data.get("editOf"))
        await spend(websocket, "chat")  # refused: an error event, and the socket stays open
        await svc.directory.submit(
            key,
            message,
            live=lambda: live_session(websocket, key),
            source="ws",
            language=language,
            client_id=client_id,
            replace_from=edit,
        )
    elif kind == "stop":
        turn_id = data.get("turnId")
        if turn_id is not None and not isinstance(turn_id, str):
            raise InvalidInput("turnId must be a string", field="turnId")
        await svc.directory.stop(key, turn_id)
    else:
        raise InvalidInput(
            f"unknown message type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}",
            field="type",
            limit=", ".join(CLIENT_TYPES),
        )
