"""RedisBus: the bus across processes, one Redis Stream per topic.

Why streams and not pub/sub: pub/sub forgets what a disconnected reader missed and drops a slow
one at its output-buffer limit; a stream keeps the last ~`maxlen` events with ids, so a reader
that reconnects (this process's, or a client's socket on any process) resumes after the last id
it saw. Each XADD refreshes the topic's TTL, so an idle topic vanishes from Redis.

One reader task per process does a blocking XREAD over the topics that have local subscribers
and fans out into their `Subscription` inboxes; a small per-process wake stream interrupts the
XREAD when a new topic is subscribed. Per subscriber the last delivered id is kept, so nothing is
delivered twice, even when the reader reconnects after Redis went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.bus.base import Bus, Guard, Subscription, parse_id
from parley.bus.cancel import Backoff, stop_readers, unavailable, uncancelled
from parley.errors import BusUnavailable, Fenced

log = logging.getLogger("parley.bus")

_FIELD = "e"
_BATCH = 500
#: XADD (and the stream's expiry) only while KEYS[2] holds ARGV[3]; nil when it does not
_GUARDED_XADD = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return id
"""
#: stream entries as a client with decode_responses=True returns them
_Entries = list[tuple[str, dict[str, str]]]


def _fmt(position: tuple[int, int]) -> str:
    return f"{position[0]}-{position[1]}"


@dataclass(slots=True)
class _Topic:
    subs: set[Subscription] = field(default_factory=set)
    pending: list[Subscription] = field(default_factory=list)
    #: id of the last entry the reader has fanned out (None: not admitted yet)
    cursor: str | None = None


class RedisBus(Bus):
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "parley:bus:",
        maxlen: int = 1000,
        ttl_seconds: int = 3600,
        block_ms: int = 5000,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._maxlen = maxlen
        self._ttl = ttl_seconds
        self._block_ms = block_ms
        self._guarded = client.register_script(_GUARDED_XADD)
        self._wake_key = f"{prefix}wake:{uuid.uuid4().hex}"
        self._wake_cursor = "0-0"
        self._topics: dict[str, _Topic] = {}
        self._poke = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBus:
        block_ms = int(options.get("block_ms", 5000))
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2,
            # a blocking XREAD answers within block_ms; anything slower means Redis is gone
            socket_timeout=block_ms / 1000 + 5,
        )
        return cls(client, **options)

    async def ping(self) -> None:
        try:
            await uncancelled(self._client.ping())
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc

    def _key(self, topic: str) -> str:
        return f"{self._prefix}t:{topic}"

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(self, topic: str, *, maxsize: int = 1024, after: str | None = None) -> Subscription:
        sub = Subscription(topic, maxsize, after=after)
        if self._closed:
            sub.mark_ready()
            return sub
        state = self._topics.setdefault(topic, _Topic())
        state.pending.append(sub)
        self._start()
        self._poke.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        state = self._topics.get(sub.topic)
        if state is None:
            return
        state.subs.discard(sub)
        if sub in state.pending:
            state.pending.remove(sub)
        if not state.subs and not state.pending:
            del self._topics[sub.topic]

    def subscriber_count(self, topic: str) -> int:
        state = self._topics.get(topic)
        return len(state.subs) + len(state.pending) if state is not None else 0

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, topic: str, event: str, *, guard: Guard | None = None) -> str:
        """Append to the topic's stream. Publishes awaited one after another keep their order.
        With `guard`, the append happens in one script with the check that the guard's key still
        holds its holder (Redis runs a script alone: no take-over falls between the two)."""
        key = self._key(topic)
        try:
            if guard is not None:
                event_id = await uncancelled(
                    self._guarded(keys=[key, guard.key], args=[self._maxlen, event, guard.holder, self._ttl])
                )
                if event_id is None:
                    raise Fenced("another node runs this session now: its events are that node's")
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.xadd(key, {_FIELD: event}, maxlen=self._maxlen, approximate=True)
                    pipe.expire(key, self._ttl)
                    event_id, _ = await uncancelled(pipe.execute())
        except (RedisError, OSError) as exc:
            raise BusUnavailable(
                f"the event bus (Redis) did not take the event ({type(exc).__name__})"
            ) from exc
        return str(event_id)

    # -- the reader --------------------------------------------------------------------------

    def _start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._read(), name="bus-reader"),
                asyncio.create_task(self._wake(), name="bus-waker"),
            ]

    async def _wake(self) -> None:
        """Interrupt the reader's blocking XREAD so a new topic joins it at once."""
        while True:
            await self._poke.wait()
            self._poke.clear()
            with contextlib.suppress(RedisError, OSError):  # the reader retries on its own
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.xadd(self._wake_key, {_FIELD: ""}, maxlen=1)
                    pipe.expire(self._wake_key, 60)
                    await uncancelled(pipe.execute())

    async def _read(self) -> None:
        backoff = Backoff(log, "bus")
        while not self._closed:
            try:
                await self._admit()
                streams = {self._wake_key: self._wake_cursor}
                streams.update(
                    {self._key(t): s.cursor for t, s in self._topics.items() if s.cursor is not None}
                )
                raw = await uncancelled(self._client.xread(streams, count=_BATCH, block=self._block_ms))  # type: ignore[arg-type]
                reply = cast("list[tuple[str, _Entries]]", raw or [])
            except (RedisError, OSError) as exc:
                await backoff.failed(exc)
                continue
            except Exception as exc:
                log.exception("bus: the reader failed; retrying")
                await backoff.failed(exc)
                continue
            backoff.answered()
            for key, entries in reply:
                self._fan_out(key, entries)

    async def _admit(self) -> None:
        """Give each new subscription its start: the topic's head, or a replay after `after`."""
        for topic, state in list(self._topics.items()):
            while state.pending:
                sub = state.pending[0]
                key = self._key(topic)
                if state.cursor is None:
                    head = cast(_Entries, await uncancelled(self._client.xrevrange(key, count=1)))
                    state.cursor = head[0][0] if head else "0-0"
                cursor = state.cursor
                if sub.after is not None and not await uncancelled(
                    self._client.xrange(key, sub.after, sub.after)
                ):
                    sub.gap = True  # trimmed or expired: the caller reloads; live events from here
                    sub.position = None
                if sub.position is None:
                    sub.position = parse_id(cursor)
                elif sub.position < parse_id(cursor):
                    missed = cast(
                        _Entries,
                        await uncancelled(self._client.xrange(key, f"({_fmt(sub.position)}", cursor)),
                    )
                    for event_id, fields in missed:
                        self._deliver(sub, event_id, fields)
                if state.pending and state.pending[0] is sub:  # not unsubscribed meanwhile
                    state.pending.pop(0)
                    state.subs.add(sub)
                sub.mark_ready()

    def _fan_out(self, key: str, entries: _Entries) -> None:
        if key == self._wake_key:
            if entries:
                self._wake_cursor = entries[-1][0]
            return
        state = self._topics.get(key.removeprefix(f"{self._prefix}t:"))
        if state is None or state.cursor is None:
            return
        for event_id, fields in entries:
            for sub in tuple(state.subs):
                self._deliver(sub, event_id, fields)
            state.cursor = event_id

    @staticmethod
    def _deliver(sub: Subscription, event_id: str, fields: dict[str, str]) -> None:
        position = parse_id(event_id)
        if sub.position is not None and position <= sub.position:
            return
        sub.position = position
        sub.deliver(fields.get(_FIELD, ""), event_id)

    async def aclose(self) -> None:
        self._closed = True
        await stop_readers(self._client, self._tasks)
        self._tasks = []
        for state in self._topics.values():
            for sub in state.pending:
                sub.mark_ready()
        with contextlib.suppress(RedisError, OSError):
            await self._client.delete(self._wake_key)
        await self._client.aclose()
