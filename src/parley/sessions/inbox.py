"""A node's inbox: commands other nodes hand to it, read in order, and answers sent back.

`<prefix>inbox:<instance>` is a Redis stream per process; `send` appends a command (a JSON
object with an "op"), `run` reads the inbox in order and hands each command to a handler. A
command that wants an answer (`ask`) names a short-lived list the handler's `answer` pushes to,
and the asking node waits on it with `BLPOP`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.bus.cancel import Backoff, unavailable, uncancelled
from parley.errors import BusUnavailable
from parley.sessions.following import error_from_wire

log = logging.getLogger("parley.cluster")

#: stream entries as a client with decode_responses=True returns them
_Entries = list[tuple[str, dict[str, str]]]


class Inbox:
    def __init__(
        self,
        redis: Redis,
        instance: str,
        *,
        prefix: str = "parley:",
        answer_seconds: float = 10.0,
        block_ms: int = 5000,
    ) -> None:
        self._redis = redis
        self._instance = instance
        self._prefix = prefix
        self._answer_seconds = answer_seconds
        self._block_ms = block_ms
        self.closed = False

    def _key(self, instance: str) -> str:
        return f"{self._prefix}inbox:{instance}"

    async def send(self, instance: str, command: dict[str, Any]) -> None:
        try:
            await uncancelled(self._redis.xadd(self._key(instance), {"c": json.dumps(command)}, maxlen=10000))
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc

    async def ask(self, instance: str, command: dict[str, Any]) -> dict[str, Any]:
        """Send a command and wait for its answer; an error in the answer is raised here."""
        reply_key = f"{self._prefix}answer:{uuid.uuid4().hex}"
        await self.send(instance, {**command, "answer": reply_key})
        try:
            got = await uncancelled(self._redis.blpop([reply_key], timeout=self._answer_seconds))
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc
        if got is None:
            raise BusUnavailable(
                f"the node running this session did not answer within {self._answer_seconds:g} s"
            )
        answer: dict[str, Any] = json.loads(got[1])
        if "error" in answer:
            raise error_from_wire(answer["error"])
        return answer

    async def answer(self, command: dict[str, Any], answer: dict[str, Any]) -> None:
        """Answer a command sent with `ask` (a no-op for one sent with `send`)."""
        reply_key = command.get("answer")
        if not reply_key:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(reply_key, json.dumps(answer))
            pipe.expire(reply_key, 60)
            await uncancelled(pipe.execute())

    async def run(self, handle: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Read this node's inbox from now on, in order, handing each command to `handle`."""
        inbox = self._key(self._instance)
        last: str | None = None
        backoff = Backoff(log, "cluster inbox")
        while not self.closed:
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
                        await handle(json.loads(fields["c"]))
                    except Exception:
                        log.exception("cluster: a handed-over command failed")

    async def delete(self) -> None:
        """This node's inbox goes with it."""
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._key(self._instance))
