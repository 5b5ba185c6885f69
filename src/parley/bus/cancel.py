"""Awaiting redis-py commands without losing a cancellation, and the loops that read Redis.

redis-py (8.x) lets a command that is cancelled mid-flight finish, then returns its result (or
raises ConnectionError) instead of raising CancelledError: the cancellation is swallowed. A task
stopped that way runs on, e.g. a stopped turn keeps streaming. `uncancelled` re-raises it: a cancel
request that arrived during the command (the task's `cancelling()` count grew) ends the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.errors import BusUnavailable

T = TypeVar("T")


async def uncancelled(command: Awaitable[T]) -> T:
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    try:
        result = await command
    except (RedisError, OSError):
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError from None
        raise
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


def unavailable(exc: BaseException) -> BusUnavailable:
    """A Redis error as Parley's: 503, retryable, naming only the error's kind (never the URL)."""
    return BusUnavailable(f"Redis does not answer ({type(exc).__name__})")


class Backoff:
    """The retry pace of a loop that reads Redis: waits that double up to 5 s, one warning when
    Redis stops answering and one when it answers again."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self.failures = 0

    async def failed(self, exc: BaseException) -> None:
        if self.failures == 0:
            self._log.warning("%s: Redis does not answer (%s); retrying", self._what, type(exc).__name__)
        self.failures += 1
        await asyncio.sleep(min(5.0, 0.05 * 2**self.failures))

    def answered(self) -> None:
        if self.failures:
            self._log.warning("%s: Redis answers again after %d failed attempts", self._what, self.failures)
            self.failures = 0


async def stop_readers(client: Redis, tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait for them. redis-py lets a cancelled blocking read run to its end
    (its block time), so the client's connections are dropped first, which ends it at once."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(RedisError, OSError):
        await client.connection_pool.disconnect()
    await asyncio.gather(*tasks, return_exceptions=True)
