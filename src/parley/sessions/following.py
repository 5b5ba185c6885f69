"""Following a session that runs on another node: its events, and the turns handed to its owner.

A node that handed a turn to the session's owner (sessions/cluster.py) follows it through the
session's bus topic: a shadow `Turn` is fed that turn's events, so the request that sent it streams
and ends as if the turn ran here. A socket of this node follows the session too, so the node
notices when the owner dies.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from parley.bus.base import Bus, Subscription
from parley.errors import ParleyError, TurnCancelled
from parley.providers.llm import Usage
from parley.sessions.events import Event
from parley.sessions.keys import public_id
from parley.sessions.turn import Turn, TurnState
from parley.store.base import Message, MessageStatus

log = logging.getLogger("parley.cluster")

_ENDINGS = ("reply", "cancelled", "interrupted", "error")


def message_from_wire(key: str, wire: dict[str, Any]) -> Message:
    """A stored message as an event carried it (`Message.to_wire`)."""
    return Message(
        id=int(wire["id"]),
        session_id=key,
        turn_id=str(wire.get("turnId", "")),
        role=wire["role"],
        content=str(wire.get("content", "")),
        status=MessageStatus(wire["status"]),
        created_at=datetime.fromisoformat(str(wire["created_at"]).replace("Z", "+00:00")).timestamp(),
        error=wire.get("error"),
        finish_reason=wire.get("finishReason"),
    )


def _error_classes(base: type[ParleyError] = ParleyError) -> dict[tuple[str, int], type[ParleyError]]:
    found = {(base.code, base.status): base}
    for sub in base.__subclasses__():
        found = {**_error_classes(sub), **found}
    return found


def error_from_wire(body: dict[str, Any]) -> ParleyError:
    """An error as an event or an answer carried it (`ParleyError.to_dict`): the same class where
    one has its code and status, so the web layer answers it as the owner would have."""
    code, status = str(body.get("code", "internal_error")), int(body.get("status", 500))
    kind = _error_classes().get((code, status), ParleyError)
    exc = kind(str(body.get("error", "error")), field=body.get("field"), limit=body.get("limit"))
    exc.status, exc.code = status, code
    return exc


@dataclass(slots=True)
class Shadow:
    """A turn handed to another node, followed from here."""

    key: str
    turn: Turn
    command: dict[str, Any]
    owner: str
    #: its user_message was seen: storage has it, so it is never sent again
    started: bool = False


@dataclass(slots=True)
class _Follow:
    sub: Subscription
    task: asyncio.Task[None]
    #: sockets of this node on the session
    users: int = 0
    #: ids of the shadow turns of the session
    shadows: set[str] = field(default_factory=set)


class Followers:
    """The sessions this node follows, one bus subscription each, and their shadow turns."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._follows: dict[str, _Follow] = {}
        self._shadows: dict[str, Shadow] = {}

    def followed(self) -> list[str]:
        return list(self._follows)

    def shadows_of(self, key: str) -> list[Shadow]:
        follow = self._follows.get(key)
        ids = list(follow.shadows) if follow is not None else []
        return [self._shadows[turn_id] for turn_id in ids if turn_id in self._shadows]

    async def watch(self, key: str) -> None:
        (await self._follow(key)).users += 1

    def unwatch(self, key: str) -> None:
        follow = self._follows.get(key)
        if follow is not None:
            follow.users -= 1
            self._unfollow(key)

    async def add(self, shadow: Shadow) -> None:
        """Follow a turn handed to `shadow.owner` (before it is sent, so no event is missed)."""
        (await self._follow(shadow.key)).shadows.add(shadow.turn.id)
        self._shadows[shadow.turn.id] = shadow

    def end(self, turn_id: str) -> None:
        shadow = self._shadows.pop(turn_id, None)
        if shadow is None:
            return
        follow = self._follows.get(shadow.key)
        if follow is not None:
            follow.shadows.discard(turn_id)
            self._unfollow(shadow.key)

    async def _follow(self, key: str) -> _Follow:
        """Read `key`'s events on this node while anything here follows it."""
        follow = self._follows.get(key)
        if follow is None:
            sub = await self._bus.join(key)
            follow = self._follows.get(key)  # another caller joined meanwhile
            if follow is None:
                task = asyncio.create_task(self._read_events(key, sub), name=f"cluster-follow:{key}")
                follow = self._follows[key] = _Follow(sub, task)
            else:
                self._bus.unsubscribe(sub)
        return follow

    def _unfollow(self, key: str) -> None:
        """Stop reading `key`'s events once nothing here follows it."""
        follow = self._follows.get(key)
        if follow is not None and follow.users <= 0 and not follow.shadows:
            del self._follows[key]
            follow.task.cancel()
            self._bus.unsubscribe(follow.sub)

    async def _read_events(self, key: str, sub: Subscription) -> None:
        while True:
            data = await sub.get()
            if not data:  # fell behind: read on after what was seen
                self._bus.unsubscribe(sub)
                sub = await self._bus.join(key, after=sub.last_id or None)
                if key in self._follows:
                    self._follows[key].sub = sub
                continue
            try:
                self._on_event(key, data)
            except Exception:
                log.exception("cluster: could not follow an event of session=%s", public_id(key))

    def _on_event(self, key: str, data: str) -> None:
        body = json.loads(data)
        shadow = self._shadows.get(body.get("turnId", ""))
        if shadow is None:
            return
        kind = str(body["type"])
        turn = shadow.turn
        if kind == "user_message":
            shadow.started = True
        if kind not in _ENDINGS:
            turn.notify(Event(kind, data))
            return
        wire = body.get("message")
        turn.reply = message_from_wire(key, wire) if isinstance(wire, dict) else None
        turn.notify(Event(kind, data))
        if kind == "reply" and turn.reply is not None:
            usage = body.get("usage")
            turn.usage = Usage(**usage) if isinstance(usage, dict) else None
            turn.finish(TurnState.COMPLETE, turn.reply)
        elif kind in ("cancelled", "interrupted"):
            turn.finish(TurnState.CANCELLED, TurnCancelled("the turn was stopped"))
        else:
            turn.finish(TurnState.FAILED, error_from_wire(body.get("error") or {}))
        self.end(turn.id)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [follow.task for follow in self._follows.values()]

    def close(self) -> None:
        """After `tasks()` were stopped: drop the subscriptions, end every shadow turn."""
        for follow in self._follows.values():
            self._bus.unsubscribe(follow.sub)
        self._follows.clear()
        for shadow in self._shadows.values():
            shadow.turn.finish(
                TurnState.CANCELLED, TurnCancelled("the server stopped while this turn ran elsewhere")
            )
        self._shadows.clear()
