"""Awaiting a redis-py command without losing a cancellation.

redis-py (8.x) lets a command that is cancelled mid-flight finish, then returns its result (or
raises ConnectionError) instead of raising CancelledError: the cancellation is swallowed. A task
stopped that way runs on, e.g. a stopped turn keeps streaming. `uncancelled` re-raises it: a cancel
request that arrived during the command (the task's `cancelling()` count grew) ends the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import RedisError

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
