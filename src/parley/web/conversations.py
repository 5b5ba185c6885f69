"""Conversations: a user's list of sessions, new/rename/delete, full-text search, export and import.

Every route works on the requesting user's own conversations only (keys `<user>/<id>`).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from parley.errors import BusUnavailable, ConfigError, InvalidInput, NotFound, QuotaExceeded
from parley.services import Services
from parley.sessions import events
from parley.sessions.keys import owner_of, public_id, session_key
from parley.sessions.registry import check_session_id
from parley.sessions.titles import Titler
from parley.store.base import _iso
from parley.store.conversations import Conversation, ConversationStore, check_title, parse_query
from parley.web import schemas
from parley.web.body import read_json, validate
from parley.web.importing import IMPORT_MAX_BYTES, read_import
from parley.web.users import current_user, owned_session

router = APIRouter()
log = logging.getLogger("parley.conversations")

PAGE_MAX = 200
SEARCH_MAX = 50


def _services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _store(request: Request) -> ConversationStore:
    store = _services(request).store
    if not isinstance(store, ConversationStore):
        raise ConfigError(
            "this store keeps no conversation list (PARLEY_DATABASE_URL)", field="PARLEY_DATABASE_URL"
        )
    return store


_wire = events.conversation_wire


async def _tell(
    request: Request, owner: str, action: events.ConversationAction, session: dict[str, Any]
) -> None:
    """Every socket of the owner hears of the change, whatever conversation it is on.

    The change is stored already: a bus that does not answer costs the event, not the request
    (the owner's other tabs see it when they reload the list).
    """
    event = events.conversations(action, session)
    try:
        await _services(request).bus.publish(events.user_topic(owner), event.data)
    except BusUnavailable as exc:
        log.warning("conversations: %s of %s not told: %s", action, session["sessionId"], exc.message)


def _cursor(value: str) -> tuple[float, str]:
    """`before`: the `next` of the previous page, `<updated_at>:<sessionId>`."""
    stamp, _, sid = value.partition(":")
    try:
        when = float(stamp)
    except ValueError:
        when = math.nan
    if not math.isfinite(when) or not sid:
        raise InvalidInput("before must be the `next` of a previous page", field="before")
    return when, sid


def new_session_id() -> str:
    return "c" + secrets.token_hex(10)


async def _room_for(request: Request, store: ConversationStore, owner: str, count: int) -> None:
    limit = _services(request).settings.max_sessions_per_user
    if await store.conversation_count(owner) + count > limit:
        raise QuotaExceeded(
            f"this user may keep {limit} conversations (PARLEY_MAX_SESSIONS_PER_USER); delete some first",
            field="sessions",
            limit=limit,
        )


@router.get("/api/sessions", response_model=schemas.SessionsOut, responses=schemas.ERRORS)
async def list_sessions(
    request: Request,
    limit: int = Query(50, ge=1, le=PAGE_MAX),
    before: str | None = Query(None, max_length=200, description="The `next` of the previous page."),
) -> dict[str, Any]:
    owner = current_user(request).id
    after = None
    if before is not None:
        when, sid = _cursor(before)
        after = (when, session_key(owner, check_session_id(sid, "before")))
    page = await _store(request).list_conversations(owner, limit=limit, before=after)
    last = page[-1] if len(page) == limit else None
    return {
        "sessions": [_wire(c) for c in page],
        "next": f"{last.updated_at!r}:{public_id(last.key)}" if last else None,
    }


@router.post(
    "/api/sessions",
    status_code=201,
    response_model=schemas.SessionOut,
    responses=schemas.ERRORS,
    openapi_extra={
        "requestBody": {**schemas.json_body(schemas.NewSessionIn)["requestBody"], "required": False}
    },
    summary="Start a new, empty conversation",
)
async def create_session(request: Request) -> dict[str, Any]:
    title = ""
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        body = validate(schemas.NewSessionIn, await read_json(request, limit=4096))
        if body.title is not None:
            title = check_title(body.title)
    owner = current_user(request).id
    store = _store(request)
    await _room_for(request, store, owner, 1)
    made = _wire(await store.create_conversation(session_key(owner, new_session_id()), title))
    await _tell(request, owner, "created", made)
    return made


@router.patch(
    "/api/sessions/{sid}",
    response_model=schemas.SessionOut,
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(schemas.RenameIn),
    summary="Rename a conversation",
)
async def rename_session(request: Request, sid: str) -> dict[str, Any]:
    key = owned_session(request, sid)
    body = validate(schemas.RenameIn, await read_json(request, limit=4096))
    title = check_title(body.title if body.title is not None else None)
    renamed = _wire(await _store(request).rename_conversation(key, title))
    await _services(request).bus.publish(key, events.title(public_id(key), title).data)
    await _tell(request, owner_of(key), "renamed", renamed)
    return renamed


@router.delete(
    "/api/sessions/{sid}",
    response_model=schemas.DeletedOut,
    responses=schemas.ERRORS,
    summary="Delete a conversation and its messages; its sockets get `deleted` and are closed",
)
async def delete_session(request: Request, sid: str) -> dict[str, Any]:
    key = owned_session(request, sid)
    svc = _services(request)
    store = _store(request)
    if await store.get_conversation(key) is None and not await svc.store.session_exists(key):
        raise NotFound("no such conversation", field="sessionId")
    # stops the running turn (on whichever node runs it) and drops queued ones first, so no reply
    # is written afterwards
    await svc.directory.clear(key)
    await store.delete_conversation(key)
    titler: Titler | None = getattr(request.app.state, "titler", None)
    if titler is not None:
        titler.forget(key)
    await svc.bus.publish(key, events.deleted(public_id(key)).data)
    await _tell(request, owner_of(key), "deleted", {"sessionId": public_id(key)})
    return {"deleted": True, "sessionId": public_id(key)}


@router.get("/api/search", response_model=schemas.SearchOut, responses=schemas.ERRORS)
async def search(
    request: Request,
    q: str | None = Query(None, description='Words (any order), "a phrase", prefix*.'),
    limit: int = Query(20, ge=1, le=SEARCH_MAX),
    sessionId: str | None = Query(None, description="Only this conversation."),
) -> dict[str, Any]:
    owner = current_user(request).id
    terms = parse_query(q or "", "q")
    key = owned_session(request, sessionId) if sessionId is not None else None
    hits = await _store(request).search(owner, terms, limit=limit, key=key)
    return {
        "results": [
            {
                "sessionId": public_id(h.key),
                "title": h.title,
                "messageId": h.message_id,
                "role": h.role,
                "snippet": h.snippet,
                "highlights": [list(r) for r in h.highlights],
                "created_at": _iso(h.created_at),
            }
            for h in hits
        ]
    }


@router.get(
    "/api/export",
    responses={
        **schemas.ERRORS,
        200: {"content": {"application/json": {}, "text/markdown": {}}, "description": "A file download."},
    },
    response_class=Response,
    summary="Download one conversation (sessionId) or all of them, as JSON or Markdown",
)
async def export(
    request: Request,
    sessionId: str | None = Query(None),
    format: str = Query("json", pattern="^(json|markdown)$"),
) -> Response:
    owner = current_user(request).id
    key = owned_session(request, sessionId) if sessionId is not None else None
    exported = await _store(request).export_conversations(owner, key)
    name = f"parley-{public_id(key)}" if key else "parley-export"
    if format == "markdown":
        content, media, ext = _markdown(exported).encode(), "text/markdown; charset=utf-8", "md"
    else:
        doc = {
            "format": "parley",
            "version": 1,
            "sessions": [
                {**_wire(c), "messages": [m.to_wire() for m in messages]} for c, messages in exported
            ],
        }
        content = json.dumps(doc, ensure_ascii=False, indent=1).encode()
        media, ext = "application/json", "json"
    return Response(
        content,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}.{ext}"'},
    )


def _markdown(exported: list[tuple[Conversation, list[Any]]]) -> str:
    out: list[str] = []
    for c, messages in exported:
        if out:
            out.append("\n---\n")
        out.append(f"# {c.title or 'Untitled conversation'}\n")
        for m in messages:
            status = "" if m.status.value == "complete" else f" ({m.status.value})"
            out.append(f"**{m.role.capitalize()}** · {_iso(m.created_at)}{status}\n\n{m.content}\n")
    return "\n".join(out)


@router.post(
    "/api/import",
    status_code=201,
    response_model=schemas.ImportOut,
    responses=schemas.ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": f"Parley's JSON export or ChatGPT's conversations.json, at most {IMPORT_MAX_BYTES} bytes.",
            "content": {"application/json": {"schema": {}}},
        }
    },
    summary="Import conversations (all or none) into new sessions",
)
async def import_sessions(request: Request) -> dict[str, Any]:
    owner = current_user(request).id
    conversations = await read_import(request)
    store = _store(request)
    await _room_for(request, store, owner, len(conversations))
    made = [
        _wire(c)
        for c in await store.import_conversations(
            owner, conversations, [new_session_id() for _ in conversations]
        )
    ]
    for session in made:  # at most IMPORT_MAX_SESSIONS (1,000): within a socket's inbox (1,024)
        await _tell(request, owner, "created", session)
    return {"sessions": made}
