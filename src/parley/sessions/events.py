"""Every event a session sends to its sockets (and to an SSE stream), one builder each.

Each event is a JSON object with a `type`; the builders are the single list of what clients
can receive, so the web app, the SSE endpoint and the docs agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from parley.providers.llm import Usage
from parley.sessions.keys import public_id
from parley.store.base import Message, _iso
from parley.store.conversations import Conversation
from parley.text import valid_text


@dataclass(slots=True, frozen=True)
class Event:
    """An event serialised once: `data` goes unchanged to every socket and SSE stream."""

    type: str
    data: str

    @classmethod
    def make(cls, type_: str, **fields: Any) -> Event:
        data = json.dumps({"type": type_, **fields}, ensure_ascii=False, separators=(",", ":"))
        # ensure_ascii=False writes an unpaired surrogate as it is, and no socket can encode
        # that: every event leaves here as text that any writer can send.
        return cls(type_, valid_text(data))


def usage_dict(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def connected(session_id: str, *, resumed: bool | None = None) -> Event:
    """The greeting. A socket that asked to resume (`after`) learns whether it did: false means the
    bus no longer keeps that event, so the client reloads the history instead."""
    extra = {"resumed": resumed} if resumed is not None else {}
    return Event.make("connected", message="Connected to chat session", sessionId=session_id, **extra)


def user_message(session_id: str, msg: Message, client_id: str | None = None) -> Event:
    extra = {"clientId": client_id} if client_id else {}
    return Event.make(
        "user_message", sessionId=session_id, turnId=msg.turn_id, message=msg.to_wire(), **extra
    )


def replaced(session_id: str, turn_id: str, from_message_id: int) -> Event:
    """An edit (or a regenerated reply): message `fromMessageId` and every later one are replaced
    by turn `turnId`, whose user_message follows; clients drop them from the conversation."""
    return Event.make("replaced", sessionId=session_id, turnId=turn_id, fromMessageId=from_message_id)


def turn_started(session_id: str, turn_id: str, message_id: int) -> Event:
    return Event.make("turn_started", sessionId=session_id, turnId=turn_id, messageId=message_id)


def chunk(session_id: str, turn_id: str, message_id: int, text: str) -> Event:
    return Event.make("chunk", sessionId=session_id, turnId=turn_id, messageId=message_id, text=text)


def reply(session_id: str, msg: Message, usage: Usage | None) -> Event:
    return Event.make(
        "reply",
        sessionId=session_id,
        turnId=msg.turn_id,
        response=msg.content,
        message=msg.to_wire(),
        usage=usage_dict(usage),
        # "length" when max_tokens cut the reply off: complete, but not the whole answer
        finishReason=msg.finish_reason,
    )


def cancelled(session_id: str, msg: Message) -> Event:
    return Event.make(
        "cancelled", sessionId=session_id, turnId=msg.turn_id, response=msg.content, message=msg.to_wire()
    )


def interrupted(session_id: str, msg: Message) -> Event:
    return Event.make(
        "interrupted", sessionId=session_id, turnId=msg.turn_id, response=msg.content, message=msg.to_wire()
    )


def turn_failed(session_id: str, msg: Message, error: dict[str, Any]) -> Event:
    return Event.make("error", sessionId=session_id, turnId=msg.turn_id, error=error, message=msg.to_wire())


def tool_call(
    session_id: str, turn_id: str, message_id: int, name: str, arguments: str, result: str, is_error: bool
) -> Event:
    """A tool the model called while writing reply `messageId`, and what it answered."""
    return Event.make(
        "tool_call",
        sessionId=session_id,
        turnId=turn_id,
        messageId=message_id,
        name=name,
        arguments=arguments,
        result=result,
        isError=is_error,
    )


def turn_dropped(session_id: str, turn_id: str, error: dict[str, Any], client_id: str | None = None) -> Event:
    """A turn that ended before its reply was stored (the server stopped while it waited or began).

    An `error` with the turn's id and no `message`: clients already show it and give a sent
    text back by its `clientId`.
    """
    extra = {"clientId": client_id} if client_id else {}
    return Event.make("error", sessionId=session_id, turnId=turn_id, error=error, **extra)


def transcription(session_id: str, text: str, language: str | None) -> Event:
    return Event.make("transcription", sessionId=session_id, text=text, language=language)


def cleared(session_id: str) -> Event:
    return Event.make("cleared", sessionId=session_id)


def error(err: dict[str, Any], client_id: str | None = None) -> Event:
    extra = {"clientId": client_id} if client_id else {}
    return Event.make("error", error=err, **extra)


PONG = Event.make("pong")


def title(session_id: str, text: str) -> Event:
    """The conversation's title changed (set after its first turn, or renamed)."""
    return Event.make("title", sessionId=session_id, title=text)


def deleted(session_id: str) -> Event:
    """The conversation and its messages are gone; the server closes the socket after this event."""
    return Event.make("deleted", sessionId=session_id)


#: what happened to a conversation of the user's list (the `action` of a `conversations` event)
ConversationAction = Literal["created", "renamed", "deleted", "updated"]


def user_topic(owner: str) -> str:
    """The bus topic every socket of `owner` hears, whatever conversation it is on: `<owner>/`.

    No session's topic is one: a session key always has an id after its slash (sessions/keys.py).
    """
    return f"{owner}/"


def conversation_wire(c: Conversation) -> dict[str, Any]:
    """A conversation as GET /api/sessions lists it."""
    return {
        "sessionId": public_id(c.key),
        "title": c.title,
        "created_at": _iso(c.created_at),
        "updated_at": _iso(c.updated_at),
        "messageCount": c.message_count,
    }


def conversations(action: ConversationAction, session: dict[str, Any]) -> Event:
    """One of the user's conversations was created, renamed, deleted or updated (a turn ended, a
    clear): sent on `user_topic`, to every socket of the user. `session` is the conversation as
    the list shows it, only `sessionId` when deleted. It carries no eventId: a reconnecting
    client reloads the list, which is what it would replay."""
    return Event.make("conversations", action=action, session=session)
