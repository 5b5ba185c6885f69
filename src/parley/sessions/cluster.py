"""ClusterDirectory: several Parley processes, one owner per session, agreed through Redis.

- **Lease.** `<prefix>lease:<key>` holds the owning node's instance name with a time to live
  (PARLEY_SESSION_LEASE_SECONDS), renewed every third of it while the session is live there and
  dropped once it idles out. A node takes a free session with `SET NX PX`.
- **Fencing.** Taking a session bumps its fencing token in the store (`Store.take_session`); every
  write of the session carries it and the store refuses an older one (`Fenced`), so a node that
  was paused or cut off from Redis past its lease cannot write over the new owner.
- **Hand-over.** A node that gets a turn, a stop or a clear for a session another node owns puts it
  on the owner's inbox stream (`<prefix>inbox:<instance>`); the owner reads its inbox in order, so
  turns run in the order they reached it. The sender follows its turn through the session's bus
  topic (a shadow `Turn` fed by those events), so an HTTP request streams from any node. A stop or
  a clear gets its answer back on a short-lived list (`BLPOP`) (sessions/inbox.py; following a
  turn: sessions/following.py).
- **Failure.** A node that follows a session (a handed-over turn waiting, or a socket open) and sees
  its lease gone takes the session, and every node takes the sessions with a reply `pending` that
  no node holds: the new fence fails what the dead node left `pending` (published as `error`
  events, so every waiter ends), and the turns it had not begun are sent again, to the new owner,
  which runs a resent turn only if storage has none of it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.bus.base import Bus, Guard
from parley.bus.cancel import stop_readers, unavailable, uncancelled
from parley.errors import BusUnavailable, Busy, NotFound, ParleyError
from parley.sessions import events
from parley.sessions.directory import MakeLive, SessionDirectory
from parley.sessions.following import Followers, Shadow
from parley.sessions.inbox import Inbox
from parley.sessions.keys import public_id
from parley.sessions.registry import SessionRegistry
from parley.sessions.turn import Turn
from parley.store.base import Store
from parley.text import valid_text

log = logging.getLogger("parley.cluster")

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
#: a command is handed on at most this often (the owner moved while it travelled)
_MAX_HOPS = 3
NODE_LOST = "the server running this reply stopped before it finished; send it again"


class ClusterDirectory(SessionDirectory):
    def __init__(
        self,
        registry: SessionRegistry,
        *,
        redis: Redis,
        bus: Bus,
        store: Store,
        instance: str,
        lease_seconds: float = 3.0,
        prefix: str = "parley:",
        answer_seconds: float = 10.0,
        block_ms: int = 5000,
    ) -> None:
        super().__init__(registry)
        self._redis = redis
        self._bus = bus
        self._store = store
        #: this process's name in leases and inboxes (unique per process, even with one node id)
        self.instance = instance
        self._lease_ms = max(100, int(lease_seconds * 1000))
        self._prefix = prefix
        self._inbox = Inbox(redis, instance, prefix=prefix, answer_seconds=answer_seconds, block_ms=block_ms)
        self._followers = Followers(bus)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        #: sessions this node owns: key -> fencing token
        self._owned: dict[str, int] = {}
        self._taking: dict[str, asyncio.Future[int]] = {}
        #: when each owned session was taken: one not live here yet is kept a lease long, so the
        #: request that took it has time to make it live (its first await is a store read)
        self._taken_at: dict[str, float] = {}
        #: sessions a call or a device of this node holds here, however idle
        self._pins: collections.Counter[str] = collections.Counter()
        self._renewed_at = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()
        self._closed = False
        #: answers to other ops handed to this node (`ask`), by op name: rtc/cluster.py's calls
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {}
        #: run with each lease renewal (every third of a lease): rtc/cluster.py renews its calls
        self.renewals: list[Callable[[], Awaitable[None]]] = []
        # a session live here writes with this node's fence while it owns the session, else with 0,
        # which the store refuses: no path around the directory can write another node's session
        registry.fence_of = lambda key: self._owned.get(key, 0)
        # and its events go out only while its lease still names this node (bus/redis.py)
        registry.guard_of = lambda key: Guard(self._lease(key), self.instance) if key in self._owned else None

    @classmethod
    def from_url(cls, registry: SessionRegistry, url: str, **options: Any) -> ClusterDirectory:
        block_ms = int(options.get("block_ms", 5000))
        answer = float(options.get("answer_seconds", 10.0))
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=max(block_ms / 1000, answer) + 5,
        )
        return cls(registry, redis=client, **options)

    def _lease(self, key: str) -> str:
        return f"{self._prefix}lease:{key}"

    # -- the web layer's calls -------------------------------------------------------------------

    async def submit(
        self,
        key: str,
        text: str,
        *,
        live: MakeLive,
        source: str = "http",
        language: str | None = None,
        client_id: str | None = None,
        replace_from: int | None = None,
    ) -> Turn:
        # asked every time, even for a session held here: another node may have taken it since the
        # last renewal (Redis restarted empty, this node paused), and the turn must go there
        owner = await self._owner(key)
        if owner == self.instance:
            session = await live()
            return session.submit(
                text, source=source, language=language, client_id=client_id, replace_from=replace_from
            )
        turn = Turn(
            text=valid_text(text),
            source=source,
            language=language,
            client_id=client_id,
            replace_from=replace_from,
            backlog=[],  # its events come from the bus, maybe before the caller watches
        )
        command = {
            "op": "chat",
            "key": key,
            "turn": turn.id,
            "text": turn.text,
            "source": source,
            "language": language,
            "clientId": client_id,
            "replaceFrom": replace_from,
        }
        await self._followers.add(Shadow(key, turn, command, owner))
        try:
            await self._inbox.send(owner, command)
        except BaseException:
            self._followers.end(turn.id)
            raise
        return turn

    async def stop(self, key: str, turn_id: str | None = None) -> str | None:
        owner = await self._holder(key)
        if owner == self.instance and key in self._owned:
            return self._stop_here(key, turn_id)
        if owner is None or owner == self.instance:
            return None  # no node runs the session (this one is only taking it): nothing to stop
        answer = await self._inbox.ask(owner, {"op": "stop", "key": key, "turnId": turn_id})
        return cast("str | None", answer.get("turnId"))

    async def clear(self, key: str) -> int:
        owner = await self._owner(key)
        if owner == self.instance:
            session = self.registry.get(key)
            return await session.clear()
        answer = await self._inbox.ask(owner, {"op": "clear", "key": key})
        return int(answer.get("removed", 0))

    async def own(self, key: str) -> None:
        for _ in range(_MAX_HOPS):
            owner = await self._owner(key)
            if owner == self.instance:
                return
            await self._inbox.ask(owner, {"op": "release", "key": key})
        raise BusUnavailable("the session is moving between nodes; try again", field="sessionId")

    def pin(self, key: str) -> None:
        self._pins[key] += 1

    def unpin(self, key: str) -> None:
        self._pins[key] -= 1
        if self._pins[key] <= 0:
            del self._pins[key]

    async def watch(self, key: str) -> None:
        """A socket of this node follows `key`: if its owner dies, this node takes the session."""
        await self._followers.watch(key)

    def unwatch(self, key: str) -> None:
        self._followers.unwatch(key)

    # -- ownership -------------------------------------------------------------------------------

    async def _holder(self, key: str) -> str | None:
        try:
            return cast("str | None", await uncancelled(self._redis.get(self._lease(key))))
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc

    async def _owner(self, key: str) -> str:
        """The instance that runs `key`, taking the session here when no node does."""
        while True:
            holder = await self._holder(key)
            if holder == self.instance:
                if key not in self._owned:
                    await self._adopt(key)
                return self.instance
            if holder is not None:
                return holder
            try:
                took = await uncancelled(
                    self._redis.set(self._lease(key), self.instance, nx=True, px=self._lease_ms)
                )
            except (RedisError, OSError) as exc:
                raise unavailable(exc) from exc
            if took:
                await self._adopt(key)
                return self.instance

    async def _adopt(self, key: str) -> int:
        """This node now holds the lease: take a new fence, and fail what a dead owner left pending."""
        if key in self._owned:
            return self._owned[key]
        waiting = self._taking.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._taking[key] = future
        try:
            fence = await self._store.take_session(key)
            failed = await self._store.fail_pending_session(key, NODE_LOST, fence=fence)
            self._owned[key] = fence
            self._taken_at[key] = time.monotonic()
            if key in self.registry:
                # live here while another node ran it (a socket made it live): what it holds of
                # the conversation is stale
                self.registry.get(key).forget_context()
            error = ParleyError(NODE_LOST).to_dict()
            for msg in failed:
                await self._bus.publish(key, events.turn_failed(public_id(key), msg, error).data)
            if failed:
                log.warning("took over session=%s: %d unfinished replies failed", public_id(key), len(failed))
            future.set_result(fence)
            return fence
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a lone caller must not warn
            raise
        finally:
            del self._taking[key]

    async def _lose(self, key: str) -> None:
        """Another node holds the lease now (or Redis was gone too long): stop running `key` here."""
        self._owned.pop(key, None)
        if key in self.registry:
            log.warning("session=%s: lease lost; its turns stop here", public_id(key))
            await self.registry.drop(key)

    async def _keep_leases(self) -> None:
        """Renew the leases of live sessions, drop those of released ones, watch followed owners."""
        interval = self._lease_ms / 3000
        down = False
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                await self._renew_all()
                for renew in self.renewals:
                    await renew()
                await self._check_followed()
                await self._take_orphans()
                self._renewed_at = time.monotonic()
                if down:
                    log.warning("cluster: Redis answers again")
                    down = False
            except (RedisError, OSError, BusUnavailable) as exc:
                if not down:
                    log.warning("cluster: Redis does not answer (%s); retrying", type(exc).__name__)
                    down = True
                if time.monotonic() - self._renewed_at > self._lease_ms / 1000 and self._owned:
                    log.warning("Redis gone past the lease: this node stops running its sessions")
                    for key in list(self._owned):
                        await self._lose(key)
            except Exception:
                log.exception("cluster: keeping the leases failed; retrying")

    async def _renew_all(self) -> None:
        for key in list(self._owned):
            lease = self._lease(key)
            if key in self.registry:
                self._taken_at.pop(key, None)  # live here: released once it idles out
            fresh = time.monotonic() - self._taken_at.get(key, 0.0) < self._lease_ms / 1000
            if key not in self.registry and key not in self._pins and not fresh:
                await uncancelled(self._release(keys=[lease], args=[self.instance]))
                self._owned.pop(key, None)
                self._taken_at.pop(key, None)
            elif not await uncancelled(self._renew(keys=[lease], args=[self.instance, self._lease_ms])):
                await self._lose(key)

    async def _take_orphans(self) -> None:
        """Take the sessions whose reply is pending while no node holds them (their owner died):
        the take fails that reply, so every session's running turn ends even with nobody watching."""
        orphans = [key for key in await self._store.pending_sessions() if key not in self._owned]
        if not orphans:
            return
        holders = await uncancelled(self._redis.mget([self._lease(key) for key in orphans]))
        for key, holder in zip(orphans, holders, strict=True):
            if holder is not None:
                continue
            took = await uncancelled(
                self._redis.set(self._lease(key), self.instance, nx=True, px=self._lease_ms)
            )
            if took:
                await self._adopt(key)  # released again by the next renewal: nothing runs it here

    async def _check_followed(self) -> None:
        keys = [key for key in self._followers.followed() if key not in self._owned]
        if not keys:
            return
        # one round trip for all of them (decode_responses: names as str)
        holders = cast(
            "list[str | None]", await uncancelled(self._redis.mget([self._lease(key) for key in keys]))
        )
        for key, holder in zip(keys, holders, strict=True):
            if holder is None:
                holder = await self._owner(key)  # the owner is gone: take the session
            for shadow in self._followers.shadows_of(key):
                if not shadow.started and shadow.owner != holder:
                    # the node it was sent to is gone before it began: send it again
                    shadow.owner = holder
                    if holder == self.instance:
                        await self._run_chat({**shadow.command, "resent": True})
                    else:
                        await self._inbox.send(holder, {**shadow.command, "resent": True})

    @property
    def redis(self) -> Redis:
        return self._redis

    @property
    def lease_ms(self) -> int:
        return self._lease_ms

    async def ask(self, instance: str, command: dict[str, Any]) -> dict[str, Any]:
        """Hand `command` (its "op" one of `handlers`) to another node and return its answer."""
        return await self._inbox.ask(instance, command)

    async def _handle(self, command: dict[str, Any]) -> None:
        op = command.get("op")
        if op == "chat":
            await self._run_chat(command)
        elif op in ("stop", "clear", "release"):
            # its own task: a clear waits for the running turn, and the inbox must go on meanwhile
            self._spawn(self._run_request(command), f"cluster-{op}")
        elif op in self.handlers:
            self._spawn(self._run_handler(command), f"cluster-{op}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        job = asyncio.create_task(work, name=name)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _run_handler(self, command: dict[str, Any]) -> None:
        try:
            answer = await self.handlers[str(command["op"])](command)
        except ParleyError as exc:
            answer = {"error": exc.to_dict()}
        await self._inbox.answer(command, answer)

    async def _run_chat(self, command: dict[str, Any]) -> None:
        key, turn_id = str(command["key"]), str(command["turn"])
        try:
            owner = await self._owner(key)
            if owner != self.instance:
                hops = int(command.get("hops", 0)) + 1
                if hops > _MAX_HOPS:
                    raise BusUnavailable("the session moved between nodes too often; send it again")
                await self._inbox.send(owner, {**command, "hops": hops})
                return
            if command.get("resent") and await self._begun(key, turn_id):
                return  # the dead owner stored it; taking the session over failed its reply
            session = self.registry.get(key)
            session.submit(
                str(command["text"]),
                source=str(command.get("source") or "http"),
                language=command.get("language"),
                client_id=command.get("clientId"),
                replace_from=command.get("replaceFrom"),
                turn_id=turn_id,
            )
        except ParleyError as exc:
            event = events.turn_dropped(public_id(key), turn_id, exc.to_dict(), command.get("clientId"))
            await self._bus.publish(key, event.data)

    async def _begun(self, key: str, turn_id: str) -> bool:
        recent = await self._store.list_messages(key, limit=200)
        return any(m.turn_id == turn_id for m in recent)

    async def _run_request(self, command: dict[str, Any]) -> None:
        key = str(command["key"])
        try:
            op = command["op"]
            owner = await self._owner(key) if op == "clear" else await self._holder(key)
            if owner != self.instance or key not in self._owned:
                if owner is None:  # nobody holds it: nothing to stop, nothing to hand over
                    await self._inbox.answer(command, {"turnId": None})
                    return
                hops = int(command.get("hops", 0)) + 1
                if hops > _MAX_HOPS:
                    raise BusUnavailable("the session moved between nodes too often; try again")
                await self._inbox.send(owner, {**command, "hops": hops})
                return
            if op == "stop":
                await self._inbox.answer(command, {"turnId": self._stop_here(key, command.get("turnId"))})
            elif op == "release":
                await self._inbox.answer(command, {"released": await self._hand_over(key)})
            else:
                session = self.registry.get(key)
                await self._inbox.answer(command, {"removed": await session.clear()})
        except ParleyError as exc:
            await self._inbox.answer(command, {"error": exc.to_dict()})

    async def _hand_over(self, key: str) -> bool:
        """Another node's call needs `key`: once its turns here are done, let the session go."""
        if key in self._pins:
            raise Busy("a voice call or device on another node holds this conversation", field="sessionId")
        if key in self.registry:
            await self.registry.get(key).idle()
            await self.registry.drop(key)
        self._owned.pop(key, None)
        await uncancelled(self._release(keys=[self._lease(key)], args=[self.instance]))
        return True

    def _stop_here(self, key: str, turn_id: str | None) -> str | None:
        if key not in self.registry:
            if turn_id is not None:
                raise NotFound(f"no running or queued turn {turn_id!r} in this session", field="turnId")
            return None
        turn = self.registry.get(key).stop(turn_id)
        return turn.id if turn is not None else None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._inbox.run(self._handle), name="cluster-inbox"),
                asyncio.create_task(self._keep_leases(), name="cluster-leases"),
            ]

    async def aclose(self) -> None:
        self._closed = self._inbox.closed = True
        await stop_readers(self._redis, [*self._tasks, *self._jobs, *self._followers.tasks()])
        self._followers.close()
        # the sessions stop with the registry; their leases go now, so another node takes them at once
        with contextlib.suppress(RedisError, OSError):
            for key in list(self._owned):
                await uncancelled(self._release(keys=[self._lease(key)], args=[self.instance]))
        await self._inbox.delete()
        self._owned.clear()
        await self._redis.aclose()
