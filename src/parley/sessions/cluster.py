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
  a clear gets its answer back on a short-lived list (`BLPOP`).
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
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.bus.base import Bus, Subscription
from parley.bus.cancel import Backoff, stop_readers, uncancelled
from parley.errors import BusUnavailable, Busy, NotFound, ParleyError, TurnCancelled
from parley.providers.llm import Usage
from parley.sessions import events
from parley.sessions.directory import MakeLive, SessionDirectory
from parley.sessions.events import Event
from parley.sessions.keys import public_id
from parley.sessions.registry import SessionRegistry
from parley.sessions.turn import Turn, TurnState
from parley.store.base import Message, MessageStatus, Store
from parley.text import valid_text

log = logging.getLogger("parley.cluster")

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
#: stream entries as a client with decode_responses=True returns them
_Entries = list[tuple[str, dict[str, str]]]
_ENDINGS = ("reply", "cancelled", "interrupted", "error")
#: a command is handed on at most this often (the owner moved while it travelled)
_MAX_HOPS = 3
NODE_LOST = "the server running this reply stopped before it finished; send it again"


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
class _Shadow:
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
    users: int = 0
    shadows: set[str] = field(default_factory=set)


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
        self._answer_seconds = answer_seconds
        self._block_ms = block_ms
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        #: sessions this node owns: key -> fencing token
        self._owned: dict[str, int] = {}
        self._taking: dict[str, asyncio.Future[int]] = {}
        #: when each owned session was taken: one not live here yet is kept a lease long, so the
        #: request that took it has time to make it live (its first await is a store read)
        self._taken_at: dict[str, float] = {}
        self._shadows: dict[str, _Shadow] = {}
        self._follows: dict[str, _Follow] = {}
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

    def _inbox(self, instance: str) -> str:
        return f"{self._prefix}inbox:{instance}"

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
        (await self._follow(key)).shadows.add(turn.id)
        self._shadows[turn.id] = _Shadow(key, turn, command, owner)
        try:
            await self._send(owner, command)
        except BaseException:
            self._end_shadow(turn.id)
            raise
        return turn

    async def stop(self, key: str, turn_id: str | None = None) -> str | None:
        owner = await self._holder(key)
        if owner == self.instance and key in self._owned:
            return self._stop_here(key, turn_id)
        if owner is None or owner == self.instance:
            return None  # no node runs the session (this one is only taking it): nothing to stop
        answer = await self._ask(owner, {"op": "stop", "key": key, "turnId": turn_id})
        return cast("str | None", answer.get("turnId"))

    async def clear(self, key: str) -> int:
        owner = await self._owner(key)
        if owner == self.instance:
            session = self.registry.get(key)
            return await session.clear()
        answer = await self._ask(owner, {"op": "clear", "key": key})
        return int(answer.get("removed", 0))

    async def own(self, key: str) -> None:
        for _ in range(_MAX_HOPS):
            owner = await self._owner(key)
            if owner == self.instance:
                return
            await self._ask(owner, {"op": "release", "key": key})
        raise BusUnavailable("the session is moving between nodes; try again", field="sessionId")

    def pin(self, key: str) -> None:
        self._pins[key] += 1

    def unpin(self, key: str) -> None:
        self._pins[key] -= 1
        if self._pins[key] <= 0:
            del self._pins[key]

    async def watch(self, key: str) -> None:
        """A socket of this node follows `key`: if its owner dies, this node takes the session."""
        (await self._follow(key)).users += 1

    def unwatch(self, key: str) -> None:
        follow = self._follows.get(key)
        if follow is not None:
            follow.users -= 1
            self._unfollow(key)

    # -- ownership -------------------------------------------------------------------------------

    async def _holder(self, key: str) -> str | None:
        try:
            return cast("str | None", await uncancelled(self._redis.get(self._lease(key))))
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"Redis does not answer ({type(exc).__name__})") from exc

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
                raise BusUnavailable(f"Redis does not answer ({type(exc).__name__})") from exc
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
        keys = [key for key in self._follows if key not in self._owned]
        if not keys:
            return
        # one round trip for all of them (decode_responses: names as str)
        holders = cast(
            "list[str | None]", await uncancelled(self._redis.mget([self._lease(key) for key in keys]))
        )
        for key, holder in zip(keys, holders, strict=True):
            if holder is None:
                holder = await self._owner(key)  # the owner is gone: take the session
            follow = self._follows.get(key)
            for turn_id in list(follow.shadows if follow is not None else ()):
                shadow = self._shadows.get(turn_id)
                if shadow is not None and not shadow.started and shadow.owner != holder:
                    # the node it was sent to is gone before it began: send it again
                    shadow.owner = holder
                    if holder == self.instance:
                        await self._run_chat({**shadow.command, "resent": True})
                    else:
                        await self._send(holder, {**shadow.command, "resent": True})

    # -- following a session's events from here --------------------------------------------------

    async def _follow(self, key: str) -> _Follow:
        """Read `key`'s events on this node (its shadow turns are fed from them) while anything here
        follows it: a socket (`users`) or a handed-over turn (`shadows`)."""
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
        self._end_shadow(turn.id)

    def _end_shadow(self, turn_id: str) -> None:
        shadow = self._shadows.pop(turn_id, None)
        if shadow is None:
            return
        follow = self._follows.get(shadow.key)
        if follow is not None:
            follow.shadows.discard(turn_id)
            self._unfollow(shadow.key)

    # -- the inbox: commands other nodes hand to this one ----------------------------------------

    async def _send(self, instance: str, command: dict[str, Any]) -> None:
        try:
            await uncancelled(
                self._redis.xadd(self._inbox(instance), {"c": json.dumps(command)}, maxlen=10000)
            )
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"Redis does not answer ({type(exc).__name__})") from exc

    @property
    def redis(self) -> Redis:
        return self._redis

    @property
    def lease_ms(self) -> int:
        return self._lease_ms

    async def ask(self, instance: str, command: dict[str, Any]) -> dict[str, Any]:
        """Hand `command` (its "op" one of `handlers`) to another node and return its answer."""
        return await self._ask(instance, command)

    async def _ask(self, instance: str, command: dict[str, Any]) -> dict[str, Any]:
        """Send a command and wait for the owner's answer; its error is raised here."""
        reply_key = f"{self._prefix}answer:{uuid.uuid4().hex}"
        await self._send(instance, {**command, "answer": reply_key})
        try:
            got = await uncancelled(self._redis.blpop([reply_key], timeout=self._answer_seconds))
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"Redis does not answer ({type(exc).__name__})") from exc
        if got is None:
            raise BusUnavailable(
                f"the node running this session did not answer within {self._answer_seconds:g} s"
            )
        answer: dict[str, Any] = json.loads(got[1])
        if "error" in answer:
            raise error_from_wire(answer["error"])
        return answer

    async def _answer(self, command: dict[str, Any], answer: dict[str, Any]) -> None:
        reply_key = command.get("answer")
        if not reply_key:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(reply_key, json.dumps(answer))
            pipe.expire(reply_key, 60)
            await uncancelled(pipe.execute())

    async def _read_inbox(self) -> None:
        inbox = self._inbox(self.instance)
        last: str | None = None
        backoff = Backoff(log, "cluster inbox")
        while not self._closed:
            try:
                if last is None:
                    head = cast(_Entries, await uncancelled(self._redis.xrevrange(inbox, count=1)))
                    last = head[0][0] if head else "0-0"
                raw = await uncancelled(self._redis.xread({inbox: last}, count=100, block=self._block_ms))
                reply = cast("list[tuple[str, _Entries]]", raw or [])
            except (RedisError, OSError) as exc:
                await backoff.failed(exc)
                continue
            backoff.answered()
            for _, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id
                    try:
                        await self._handle(json.loads(fields["c"]))
                    except Exception:
                        log.exception("cluster: a handed-over command failed")

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
        await self._answer(command, answer)

    async def _run_chat(self, command: dict[str, Any]) -> None:
        key, turn_id = str(command["key"]), str(command["turn"])
        try:
            owner = await self._owner(key)
            if owner != self.instance:
                hops = int(command.get("hops", 0)) + 1
                if hops > _MAX_HOPS:
                    raise BusUnavailable("the session moved between nodes too often; send it again")
                await self._send(owner, {**command, "hops": hops})
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
                    await self._answer(command, {"turnId": None})
                    return
                hops = int(command.get("hops", 0)) + 1
                if hops > _MAX_HOPS:
                    raise BusUnavailable("the session moved between nodes too often; try again")
                await self._send(owner, {**command, "hops": hops})
                return
            if op == "stop":
                await self._answer(command, {"turnId": self._stop_here(key, command.get("turnId"))})
            elif op == "release":
                await self._answer(command, {"released": await self._hand_over(key)})
            else:
                session = self.registry.get(key)
                await self._answer(command, {"removed": await session.clear()})
        except ParleyError as exc:
            await self._answer(command, {"error": exc.to_dict()})

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
                asyncio.create_task(self._read_inbox(), name="cluster-inbox"),
                asyncio.create_task(self._keep_leases(), name="cluster-leases"),
            ]

    async def aclose(self) -> None:
        self._closed = True
        await stop_readers(
            self._redis, [*self._tasks, *self._jobs, *(f.task for f in self._follows.values())]
        )
        for follow in self._follows.values():
            self._bus.unsubscribe(follow.sub)
        self._follows.clear()
        for shadow in list(self._shadows.values()):
            error = TurnCancelled("the server stopped while this turn ran elsewhere")
            shadow.turn.finish(TurnState.CANCELLED, error)
        self._shadows.clear()
        # the sessions stop with the registry; their leases go now, so another node takes them at once
        with contextlib.suppress(RedisError, OSError):
            for key in list(self._owned):
                await uncancelled(self._release(keys=[self._lease(key)], args=[self.instance]))
            await self._redis.delete(self._inbox(self.instance))
        self._owned.clear()
        await self._redis.aclose()
