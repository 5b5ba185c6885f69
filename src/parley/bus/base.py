"""The bus seam. Events travel as already-serialised JSON text so a fan-out to N sockets
serialises once, and a cross-process bus (Redis) can carry them unchanged."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod


class Subscription:
    """One subscriber's bounded inbox. A subscriber that falls `maxsize` events behind is marked
    overflowed (its connection should be closed) rather than slowing every other subscriber."""

    __slots__ = ("_queue", "overflowed", "topic")

    def __init__(self, topic: str, maxsize: int = 1024) -> None:
        self.topic = topic
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize)
        self.overflowed = False

    def deliver(self, event: str) -> None:
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            # Wake the reader so it notices the overflow.
            self._queue.get_nowait()
            self._queue.put_nowait("")

    async def get(self) -> str:
        """The next event; "" means this subscription overflowed and should be dropped."""
        event = await self._queue.get()
        return "" if self.overflowed else event


class Bus(ABC):
    @abstractmethod
    def subscribe(self, topic: str, *, maxsize: int = 1024) -> Subscription: ...

    @abstractmethod
    def unsubscribe(self, sub: Subscription) -> None: ...

    @abstractmethod
    async def publish(self, topic: str, event: str) -> None: ...

    def subscriber_count(self, topic: str) -> int:
        return 0

    async def aclose(self) -> None:
        """Release connections; a no-op for the in-process bus."""
