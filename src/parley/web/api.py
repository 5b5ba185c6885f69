"""The REST API: the seed app's endpoints with their shapes, plus streaming, stop and health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from parley.audio.decode import measure_async
from parley.audio.formats import MIME, check_audio
from parley.errors import InvalidInput, PayloadTooLarge, TurnCancelled
from parley.language import check_language
from parley.providers.stt import AudioInput
from parley.services import Services
from parley.sessions import events
from parley.sessions.events import Event, usage_dict
from parley.sessions.keys import public_id
from parley.sessions.turn import Turn
from parley.text import valid_text
from parley.web import schemas
from parley.web.body import bounded_receive, read_json, require_text, transport_limit, validate
from parley.web.errors import error_body
from parley.web.users import edited_message, live_session, owned_session, spend

router = APIRouter()

SEED_MISSING_CHAT = "Missing message or sessionId"
SEED_MISSING_AUDIO = "Missing audio or sessionId"
#: bytes of an upload allowed beyond PARLEY_MAX_AUDIO_BYTES, for the multipart framing and fields
_MULTIPART_SLACK = 65536


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _json_limit(svc: Services) -> int:
    # A message of the maximum length in any JSON spelling, plus room for the other fields.
    return transport_limit(svc.settings.max_message_chars)


def _wants_stream(request: Request, body: schemas.ChatIn) -> bool:
    return body.stream or "text/event-stream" in request.headers.get("accept", "")


@router.post(
    "/api/chat",
    response_model=schemas.ChatOut,
    responses={**schemas.ERRORS, 200: {"content": {"text/event-stream": {}}}},
    openapi_extra=schemas.json_body(schemas.ChatIn),
    summary="Send a message; the reply comes as JSON, or as SSE with stream=true",
)
async def chat(request: Request) -> Any:
    svc = services(request)
    body = validate(schemas.ChatIn, await read_json(request, limit=_json_limit(svc)))
    if body.message is None or body.sessionId is None:
        raise InvalidInput(SEED_MISSING_CHAT, field="message" if body.message is None else "sessionId")
    key = owned_session(request, body.sessionId)
    text = require_text(
        body.message, field="message", limit=svc.settings.max_message_chars, missing=SEED_MISSING_CHAT
    )
    language = check_language(body.language)
    edit = await edited_message(request, key, body.editOf)
    await spend(request, "chat")
    turn = await svc.directory.submit(
        key,
        text,
        live=lambda: live_session(request, key),
        source="http",
        language=language,
        client_id=body.clientId,
        replace_from=edit,
    )
    if _wants_stream(request, body):
        return StreamingResponse(
            _sse(turn.watch()),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Turn-Id": turn.id},
        )
    return await _reply_json(public_id(key), turn)


async def _reply_json(session_id: str, turn: Turn) -> dict[str, Any]:
    try:
        # shield: a client hanging up must not cancel the turn, which others may be watching.
        msg = await asyncio.shield(turn.done)
    except TurnCancelled:
        # A stopped turn is not an error for the sender: it gets what was written so far.
        stopped = turn.reply
        return {
            "response": stopped.content if stopped else "",
            "sessionId": session_id,
            "turnId": turn.id,
            "status": "cancelled",
            "message": stopped.to_wire() if stopped else None,
        }
    return {
        "response": msg.content,
        "sessionId": session_id,
        "turnId": turn.id,
        "status": "complete",
        "message": msg.to_wire(),
        "usage": usage_dict(turn.usage),
    }


async def _sse(feed: asyncio.Queue[Event | None]) -> AsyncIterator[str]:
    while (event := await feed.get()) is not None:
        yield f"event: {event.type}\ndata: {event.data}\n\n"


@router.post(
    "/api/transcribe",
    response_model=schemas.TranscribeOut,
    responses=schemas.ERRORS,
    openapi_extra=schemas.MULTIPART_AUDIO,
    summary="Transcribe a recording (multipart: audio, sessionId, optional language)",
)
async def transcribe(request: Request) -> dict[str, Any]:
    svc = services(request)
    limit = svc.settings.max_audio_bytes
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise InvalidInput(
            "Content-Type must be multipart/form-data with fields audio and sessionId",
            field="Content-Type",
            limit="multipart/form-data",
        )
    too_large = PayloadTooLarge(f"audio is larger than {limit} bytes", field="audio", limit=limit)
    # the multipart framing and the other fields fit in the slack
    body_limit = limit + _MULTIPART_SLACK
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > body_limit:
        raise too_large
    # The form is read through a counter, so a chunked (or mislabelled) body stops at the limit
    # instead of being written to disk in full first.
    counted = Request(request.scope, bounded_receive(request.receive, limit=body_limit, error=too_large))
    async with counted.form(max_files=2, max_fields=8) as form:
        audio = form.get("audio")
        session_raw = form.get("sessionId")
        language = form.get("language")
        if not isinstance(audio, UploadFile) or not isinstance(session_raw, str) or not session_raw:
            raise InvalidInput(
                SEED_MISSING_AUDIO, field="audio" if not isinstance(audio, UploadFile) else "sessionId"
            )
        key = owned_session(request, session_raw)
        if audio.size is not None and audio.size > limit:
            raise too_large
        data = await audio.read(limit + 1)
    kind = check_audio(data, limit=limit)
    language = check_language(language)
    await spend(request, "transcribe")
    # Measured here, before any provider sees it: a cloud service gets the recording as it is,
    # so this is where PARLEY_MAX_AUDIO_SECONDS holds for every one of them (a 413 like the bytes).
    await measure_async(data, max_seconds=svc.settings.max_audio_seconds, max_bytes=limit)
    transcript = await svc.stt.transcribe(
        AudioInput(data, MIME[kind], audio.filename or f"recording.{kind}"), language=language or None
    )
    text = valid_text(transcript.text)  # a model's text: it must encode in the answer
    session_id = public_id(key)
    # the session's sockets see the transcript (straight on the bus: no live session is made for it)
    await svc.bus.publish(key, events.transcription(session_id, text, transcript.language).data)
    return {"text": text, "sessionId": session_id, "language": transcript.language}


@router.get("/api/history", response_model=schemas.HistoryOut, responses=schemas.ERRORS)
async def history(
    request: Request,
    sessionId: str | None = Query(None),
    limit: int | None = Query(None, ge=1, le=10000, description="Only the newest N messages."),
) -> dict[str, Any]:
    key = owned_session(request, sessionId)
    svc = services(request)
    messages = await svc.store.list_messages(key, limit=limit)
    return {"sessionId": public_id(key), "messages": [m.to_wire() for m in messages]}


@router.post(
    "/api/clear",
    response_model=schemas.ClearOut,
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(schemas.SessionIn),
)
async def clear(request: Request) -> dict[str, Any]:
    svc = services(request)
    body = validate(schemas.SessionIn, await read_json(request, limit=4096))
    key = owned_session(request, body.sessionId)
    removed = await svc.directory.clear(key)
    return {"success": True, "removed": removed}


@router.post(
    "/api/stop",
    response_model=schemas.StopOut,
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(schemas.StopIn),
    summary="Stop the running turn of a session (or a named queued one)",
)
async def stop(request: Request) -> dict[str, Any]:
    svc = services(request)
    body = validate(schemas.StopIn, await read_json(request, limit=4096))
    key = owned_session(request, body.sessionId)
    stopped = await svc.directory.stop(key, body.turnId)
    return {"stopped": stopped is not None, "turnId": stopped}


@router.get("/healthz", summary="Liveness and store health")
async def healthz(request: Request) -> JSONResponse:
    svc = services(request)
    try:
        await svc.store.ping()
    except Exception as exc:
        if svc.settings.auth != "none":
            return JSONResponse({"status": "error"}, status_code=503)
        return JSONResponse({"status": "error", "store": error_body(exc)["error"]}, status_code=503)
    if svc.settings.auth != "none":
        # open to anyone: on a server with users it says nothing about what runs behind it
        return JSONResponse({"status": "ok"})
    return JSONResponse(
        {
            "status": "ok",
            "store": "ok",
            "chat": {"provider": svc.chat.name, "model": svc.chat.model},
            "stt": {"provider": svc.stt.name, "model": svc.stt.model},
            "tts": {"provider": svc.tts.name, "voice": svc.tts.voice},
            "vad": svc.calls.vad.name if svc.calls.vad is not None else None,
            # "ready" once loaded ahead; "loading" until then (the first request then waits)
            "models": dict(svc.warmup.state) if svc.warmup is not None else {},
            "liveSessions": len(svc.sessions),
        }
    )
