"""In-process bus: the default for one server process."""

from __future__ import annotations

import itertools
import secrets
import time
from collections import OrderedDict, deque

from parley.bus.base import Bus, Guard, Subscription, parse_id


class LocalBus(Bus):
    """Fan-out inside one process. The last `history` events of a topic are kept until the topic
    has been idle for `keep_seconds`, so a socket that reconnects can resume after an id."""

    def __init__(self, *, history: int = 1000, keep_seconds: float = 600.0) -> None:
        self._topics: dict[str, set[Subscription]] = {}
        self._history: OrderedDict[str, tuple[float, deque[tuple[str, str]]]] = OrderedDict()
        self._size = history
        self._keep = keep_seconds
        # ids are `<this bus's start, ms>-<count from a random start>`: growing, and not one an
        # earlier process (or bus) gave out, so a client resuming after a restart is told there is
        # a gap, not replayed from a stranger's event of the same number
        self._epoch = time.time_ns() // 1_000_000
        self._ids = itertools.count(secrets.randbits(40))

    def subscribe(self, topic: str, *, maxsize: int = 1024, after: str | None = None) -> Subscription:
        sub = Subscription(topic, maxsize, after=after)
        if after is not None:
            self._replay(sub, after)
        self._topics.setdefault(topic, set()).add(sub)
        sub.mark_ready()
        return sub

    def _replay(self, sub: Subscription, after: str) -> None:
        self._forget_idle()
        kept = self._history.get(sub.topic)
        events = kept[1] if kept is not None else deque()
        ids = [event_id for event_id, _ in events]
        if after not in ids:
            sub.gap = True
            return
        for event_id, event in itertools.islice(events, ids.index(after) + 1, None):
            sub.deliver(event, event_id)
            sub.position = parse_id(event_id)

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._topics[sub.topic]

    async def publish(self, topic: str, event: str, *, guard: Guard | None = None) -> str:
        event_id = f"{self._epoch}-{next(self._ids)}"
        self._forget_idle()
        kept = self._history.pop(topic, None)
        events = kept[1] if kept is not None else deque(maxlen=self._size)
        events.append((event_id, event))
        self._history[topic] = (time.monotonic(), events)
        # put_nowait on each inbox: O(subscribers) with no awaits, so one slow socket
        # never delays the others; each socket's own writer task does the sending.
        for sub in tuple(self._topics.get(topic, ())):
            sub.deliver(event, event_id)
        return event_id

    def _forget_idle(self) -> None:
        # oldest activity first: stop at the first topic still fresh
        cutoff = time.monotonic() - self._keep
        while self._history:
            topic, (touched, _) = next(iter(self._history.items()))
            if touched >= cutoff:
                return
            del self._history[topic]

    def subscriber_count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))
