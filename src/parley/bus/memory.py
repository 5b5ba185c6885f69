"""In-process bus: the default for one server process."""

from __future__ import annotations

from parley.bus.base import Bus, Subscription


class LocalBus(Bus):
    def __init__(self) -> None:
        self._topics: dict[str, set[Subscription]] = {}

    def subscribe(self, topic: str, *, maxsize: int = 1024) -> Subscription:
        sub = Subscription(topic, maxsize)
        self._topics.setdefault(topic, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._topics[sub.topic]

    async def publish(self, topic: str, event: str) -> None:
        # put_nowait on each inbox: O(subscribers) with no awaits, so one slow socket
        # never delays the others; each socket's own writer task does the sending.
        for sub in tuple(self._topics.get(topic, ())):
            sub.deliver(event)

    def subscriber_count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))
