"""Bus fixtures: every contract test runs on LocalBus and on RedisBus (a real Redis, own key prefix)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from parley.bus.base import Bus
from parley.bus.memory import LocalBus
from parley.bus.redis import RedisBus
from tests.conftest import require_service

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"

BusFactory = Callable[[], RedisBus]


@asynccontextmanager
async def redis_buses() -> AsyncIterator[tuple[str, BusFactory]]:
    """A key prefix of its own and a maker of RedisBus instances ("processes") sharing it; the
    buses are closed and the prefix's keys deleted afterwards."""
    require_service(REDIS_HOST, REDIS_PORT, "Redis, for the Redis bus")
    prefix = f"parley-test:{uuid.uuid4().hex}:"
    made: list[RedisBus] = []

    def make() -> RedisBus:
        made.append(RedisBus.from_url(REDIS_URL, prefix=prefix))
        return made[-1]

    try:
        yield prefix, make
    finally:
        for one in made:
            await one.aclose()
        client = Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def redis() -> AsyncIterator[tuple[str, BusFactory]]:
    async with redis_buses() as made:
        yield made


@pytest.fixture(params=["local", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "local":
        local = LocalBus()
        yield local
        await local.aclose()
        return
    async with redis_buses() as (_, make):
        yield make()
