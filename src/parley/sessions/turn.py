"""A turn: one user message and the reply to it, from queued to finished."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum

from parley.providers.llm import ChatDelta, Usage
from parley.sessions.events import Event
from parley.store.base import Message


class TurnState(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self not in (TurnState.QUEUED, TurnState.RUNNING)


def new_turn_id() -> str:
    return "turn_" + uuid.uuid4().hex[:20]


@dataclass(eq=False, slots=True)
class Turn:
    text: str
    source: str = "http"
    #: the user's language when known (speech-to-text or the UI); the reply should use it
    language: str | None = None
    #: an id the client chose for its message, echoed in this turn's events
    client_id: str | None = None
    #: an edit or a regenerated reply: this message and all after it are replaced by this turn
    replace_from: int | None = None
    #: the reply written elsewhere instead of by the session's model (a XiaoZhi server a voice
    #: bridge talks to); stored and broadcast like the model's
    relay: AsyncIterator[ChatDelta] | None = None
    id: str = field(default_factory=new_turn_id)
    state: TurnState = TurnState.QUEUED
    queued_at: float = field(default_factory=time.perf_counter)
    #: resolved with the stored reply, or with the error that ended the turn
    done: asyncio.Future[Message] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    stop_requested: bool = False
    #: set by a barge-in: store this (the part the user heard) instead of what was written
    heard: str | None = None
    #: the stored reply once finished (complete, cancelled or failed) and its token usage
    reply: Message | None = None
    usage: Usage | None = None
    #: while running: the stored (pending) reply's id, and the reply text so far
    message_id: int | None = None
    parts: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    #: set when `parts` grows, cleared by whoever stores the text so far
    grew: asyncio.Event = field(default_factory=asyncio.Event)
    #: the bus id of this turn's user_message event: a socket joining mid-reply resumes after it
    #: (the bus replays turn_started and every chunk so far, then live ones follow)
    mark: str | None = None
    #: the task streaming from the model; cancelling it is how a turn is stopped
    stream_task: asyncio.Task[None] | None = None
    _watchers: list[asyncio.Queue[Event | None]] = field(default_factory=list)
    #: every event so far, for a watcher that comes late (a turn followed from another node, whose
    #: events may arrive before the request that sent it watches); None: not kept
    backlog: list[Event | None] | None = None

    def watch(self) -> asyncio.Queue[Event | None]:
        """A private feed of this turn's events (for the HTTP request that started it); None ends it."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        for event in self.backlog or ():
            queue.put_nowait(event)
        self._watchers.append(queue)
        return queue

    def notify(self, event: Event | None) -> None:
        if self.backlog is not None:
            self.backlog.append(event)
        for queue in self._watchers:
            queue.put_nowait(event)

    def finish(self, state: TurnState, result: Message | BaseException) -> None:
        self.state = state
        if not self.done.done():
            if isinstance(result, BaseException):
                self.done.set_exception(result)
                # A turn nobody awaits (sent over WS) must not warn "exception never retrieved".
                self.done.exception()
            else:
                self.done.set_result(result)
        self.notify(None)
