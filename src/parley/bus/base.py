"""The bus seam. Events travel as already-serialised JSON text so a fan-out to N sockets
serialises once, and a cross-process bus (Redis) can carry them unchanged.

Every published event gets an id (`"<ms>-<seq>"`, Redis stream ids; LocalBus counts) that grows
with publish order per topic. A subscriber remembers `last_id` and, after reconnecting,
subscribes with `after=` that id: it receives what came after it, with no gap and no duplicate,
or `gap` is set when the bus no longer keeps that id (the caller reloads instead).
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from parley.errors import InvalidInput

_EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}")


def parse_id(event_id: str) -> tuple[int, int]:
    """An event id as a sortable pair; InvalidInput naming `after` when it is not one."""
    if not _EVENT_ID.fullmatch(event_id):
        raise InvalidInput("an event id looks like 1712345678901-0", field="after", limit="<ms>-<seq>")
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


class Subscription:
    """One subscriber's bounded inbox. A subscriber that falls `maxsize` events behind is marked
    overflowed (its connection should be closed) rather than slowing every other subscriber."""

    __slots__ = ("_queue", "_ready", "after", "gap", "last_id", "overflowed", "position", "topic")

    def __init__(self, topic: str, maxsize: int = 1024, *, after: str | None = None) -> None:
        if after is not None:
            parse_id(after)
        self.topic = topic
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize)
        self.overflowed = False
        #: the id asked to resume after (None: from when the subscription is ready)
        self.after = after
        #: the id of the last event get() returned ("" before any event that came with an id)
        self.last_id = ""
        #: True when `after` is no longer kept by the bus: events were missed, reload instead
        self.gap = False
        #: the bus's own mark: the id of the last event delivered here (a bus never delivers twice)
        self.position: tuple[int, int] | None = parse_id(after) if after is not None else None
        self._ready = asyncio.Event()

    def deliver(self, event: str, event_id: str = "") -> None:
        if self.overflowed:
            return
        try:
            self._queue.put_nowait((event_id, event))
        except asyncio.QueueFull:
            self.overflowed = True
            # Wake the reader so it notices the overflow.
            self._queue.get_nowait()
            self._queue.put_nowait(("", ""))

    async def get(self) -> str:
        """The next event; "" means this subscription overflowed and should be dropped."""
        event_id, event = await self._queue.get()
        if self.overflowed:
            return ""
        if event_id:
            self.last_id = event_id
        return event

    @property
    def queued(self) -> int:
        """Events waiting in the inbox."""
        return self._queue.qsize()

    def mark_ready(self) -> None:
        self._ready.set()

    async def ready(self) -> None:
        """Returns once every event published from now on reaches this inbox (for a resuming
        subscription: once what came after `after` is in it, or `gap` is set)."""
        await self._ready.wait()


@dataclass(slots=True, frozen=True)
class Guard:
    """Publish only while `key` holds `holder` (a node's lease on a session, sessions/cluster.py):
    the check and the publish are one step on the bus, so a node that lost its lease cannot slip
    an event in after another node took the session over."""

    key: str
    holder: str


class Bus(ABC):
    @abstractmethod
    def subscribe(self, topic: str, *, maxsize: int = 1024, after: str | None = None) -> Subscription: ...

    @abstractmethod
    def unsubscribe(self, sub: Subscription) -> None: ...

    @abstractmethod
    async def publish(self, topic: str, event: str, *, guard: Guard | None = None) -> str:
        """Send `event` to every subscriber of `topic`; returns its id. With `guard`, `Fenced`
        instead when the guard no longer holds (a bus in one process has nothing to guard)."""

    async def join(self, topic: str, *, maxsize: int = 1024, after: str | None = None) -> Subscription:
        """subscribe() and wait until the subscription is live (a distributed bus needs a round trip)."""
        sub = self.subscribe(topic, maxsize=maxsize, after=after)
        await sub.ready()
        return sub

    def subscriber_count(self, topic: str) -> int:
        return 0

    async def aclose(self) -> None:
        """Release connections; a no-op for the in-process bus."""
