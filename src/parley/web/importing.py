"""Reading an import: Parley's JSON export or ChatGPT's `conversations.json`, checked whole first.

Every problem is an InvalidInput naming the field by its path (`sessions[2].messages[5].role`) and
the limit it broke, found before anything is stored: an import is taken whole or not at all.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any, cast

from fastapi import Request

from parley.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from parley.store.base import MessageStatus, Role
from parley.store.conversations import TITLE_MAX, ImportedConversation, ImportedMessage
from parley.web.body import parse_json

IMPORT_MAX_BYTES = 16 * 1024 * 1024
IMPORT_MAX_SESSIONS = 1000
IMPORT_MAX_MESSAGES = 100_000
#: characters of one imported message (a user's own are bounded by PARLEY_MAX_MESSAGE_CHARS; a
#: reply is not)
IMPORT_MAX_CHARS = 200_000
_TURN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_STATUSES = {s.value for s in MessageStatus if s is not MessageStatus.PENDING}


async def read_import(request: Request) -> list[ImportedConversation]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {ctype or 'missing'!r}",
            field="Content-Type",
            limit="application/json",
        )
    too_large = PayloadTooLarge(
        f"body is larger than {IMPORT_MAX_BYTES} bytes", field="body", limit=IMPORT_MAX_BYTES
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > IMPORT_MAX_BYTES:
        raise too_large
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > IMPORT_MAX_BYTES:
            raise too_large
    return parse_import(parse_json(body, what="body"))


def parse_import(data: Any) -> list[ImportedConversation]:
    if isinstance(data, dict) and "sessions" in data:
        sessions = _list(data["sessions"], "sessions", IMPORT_MAX_SESSIONS)
        found = [_parley(s, f"sessions[{i}]") for i, s in enumerate(sessions)]
    elif isinstance(data, list):
        _list(data, "body", IMPORT_MAX_SESSIONS)
        found = [_chatgpt(c, f"[{i}]") for i, c in enumerate(data)]
    else:
        raise InvalidInput(
            "body must be Parley's export (an object with sessions) or ChatGPT's conversations.json (a list)",
            field="body",
        )
    if not found:
        raise InvalidInput("nothing to import: no conversation", field="sessions")
    total = sum(len(c.messages) for c in found)
    if total > IMPORT_MAX_MESSAGES:
        raise InvalidInput(
            f"more than {IMPORT_MAX_MESSAGES} messages in one import",
            field="messages",
            limit=IMPORT_MAX_MESSAGES,
        )
    return found


def _list(value: Any, field: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list", field=field)
    if len(value) > limit:
        raise InvalidInput(f"{field} holds more than {limit} entries", field=field, limit=limit)
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object", field=field)
    return value


def _text(value: Any, field: str, limit: int, *, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    if len(value) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters", field=field, limit=limit)
    return value


def _time(value: Any, field: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        stamp = float(value)
    elif isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise InvalidInput(f"{field} is not an ISO 8601 time", field=field) from None
    else:
        raise InvalidInput(f"{field} must be an ISO 8601 time or a number of seconds", field=field)
    if not 0 <= stamp < 1e11:
        raise InvalidInput(f"{field} is out of range", field=field)
    return stamp


def _parley(raw: Any, at: str) -> ImportedConversation:
    session = _object(raw, at)
    now = time.time()
    title = " ".join(_text(session.get("title"), f"{at}.title", TITLE_MAX, default="").split())
    messages = []
    for j, item in enumerate(_list(session.get("messages"), f"{at}.messages", IMPORT_MAX_MESSAGES)):
        field = f"{at}.messages[{j}]"
        m = _object(item, field)
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise InvalidInput(f"{field}.role must be user or assistant", field=f"{field}.role")
        status = m.get("status", "complete")
        if status not in _STATUSES:
            raise InvalidInput(
                f"{field}.status must be one of {', '.join(sorted(_STATUSES))}",
                field=f"{field}.status",
                limit=", ".join(sorted(_STATUSES)),
            )
        turn_id = m.get("turnId")
        error = m.get("error")
        reason = m.get("finishReason")
        messages.append(
            ImportedMessage(
                role=cast(Role, role),
                content=_text(m.get("content"), f"{field}.content", IMPORT_MAX_CHARS),
                status=MessageStatus(status),
                created_at=_time(m.get("created_at"), f"{field}.created_at", now),
                turn_id=turn_id if isinstance(turn_id, str) and _TURN_ID.match(turn_id) else f"import_{j}",
                error=_text(error, f"{field}.error", 2000) if error is not None else None,
                finish_reason=_text(reason, f"{field}.finishReason", 64) if reason is not None else None,
            )
        )
    first = messages[0].created_at if messages else now
    last = max((m.created_at for m in messages), default=first)
    return ImportedConversation(
        title=title,
        created_at=_time(session.get("created_at"), f"{at}.created_at", first),
        updated_at=_time(session.get("updated_at"), f"{at}.updated_at", last),
        messages=messages,
    )


def _chatgpt(raw: Any, at: str) -> ImportedConversation:
    """One ChatGPT conversation: its `mapping` walked from `current_node` back to the root."""
    conv = _object(raw, at)
    mapping = _object(conv.get("mapping"), f"{at}.mapping")
    now = time.time()
    chain: list[dict[str, Any]] = []
    node_id = conv.get("current_node")
    seen: set[str] = set()
    while isinstance(node_id, str) and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        node = _object(mapping[node_id], f"{at}.mapping.{node_id[:40]}")
        chain.append(node)
        node_id = node.get("parent")
    messages: list[ImportedMessage] = []
    for j, node in enumerate(reversed(chain)):
        msg = node.get("message")
        if not isinstance(msg, dict):
            continue
        role = (msg.get("author") or {}).get("role") if isinstance(msg.get("author"), dict) else None
        content = msg.get("content")
        if role not in ("user", "assistant") or not isinstance(content, dict):
            continue  # system prompts, tools, hidden context
        parts = content.get("parts")
        if content.get("content_type") != "text" or not isinstance(parts, list):
            continue
        text = "\n".join(p for p in parts if isinstance(p, str)).strip()
        if not text:
            continue
        field = f"{at}.mapping.{str(node.get('id', j))[:40]}.message.content"
        messages.append(
            ImportedMessage(
                role=cast(Role, role),
                content=_text(text, field, IMPORT_MAX_CHARS),
                status=MessageStatus.COMPLETE,
                created_at=_time(msg.get("create_time"), f"{field}.create_time", now),
                turn_id=f"import_{len(messages) // 2}",
            )
        )
    first = messages[0].created_at if messages else now
    return ImportedConversation(
        title=" ".join(_text(conv.get("title"), f"{at}.title", TITLE_MAX, default="").split()),
        created_at=_time(conv.get("create_time"), f"{at}.create_time", first),
        updated_at=_time(conv.get("update_time"), f"{at}.update_time", first),
        messages=messages,
    )
