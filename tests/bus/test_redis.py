"""What only the Redis bus has to show: other processes, Redis going away, start-up checks."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from parley.bus.factory import build_bus
from parley.bus.memory import LocalBus
from parley.bus.redis import RedisBus
from parley.errors import BusUnavailable, ConfigError
from tests.bus.conftest import REDIS_URL, BusFactory
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "redis://user:hunter2-secret@127.0.0.1:9/0"  # nothing listens on port 9


async def test_two_buses_see_each_others_events_in_order(redis: tuple[str, BusFactory]) -> None:
    _, make = redis
    one, two = make(), make()
    on_one = await one.join("alice/s1")
    on_two = await two.join("alice/s1")
    for n in range(30):
        await (one if n % 2 else two).publish("alice/s1", str(n))
    for sub in (on_one, on_two):
        assert [await sub.get() for _ in range(30)] == [str(n) for n in range(30)]
        assert sub.queued == 0


async def test_a_socket_resumes_on_another_process_after_the_id_it_saw_on_the_first(
    redis: tuple[str, BusFactory],
) -> None:
    _, make = redis
    first, second = make(), make()
    sub = await first.join("alice/s1")
    for n in range(4):
        await first.publish("alice/s1", str(n))
    assert [await sub.get() for _ in range(2)] == ["0", "1"]
    first.unsubscribe(sub)
    moved = await second.join("alice/s1", after=sub.last_id)
    await first.publish("alice/s1", "4")
    assert [await moved.get() for _ in range(3)] == ["2", "3", "4"]
    assert not moved.gap and moved.queued == 0


async def test_events_published_by_another_os_process_arrive_in_order(redis: tuple[str, BusFactory]) -> None:
    prefix, make = redis
    sub = await make().join("alice/s1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bus.publisher", REDIS_URL, prefix, "alice/s1", "100", cwd=ROOT
    )
    try:
        # the process boundary: the only place with a deadline
        got = [await asyncio.wait_for(sub.get(), 60) for _ in range(100)]
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert got == [f"from-process-{n}" for n in range(100)]
    assert sub.queued == 0


async def test_the_reader_reconnects_when_its_connection_dies_and_delivers_nothing_twice(
    redis: tuple[str, BusFactory],
) -> None:
    prefix, make = redis
    name = prefix.replace(":", "-") + "reader"
    reader = RedisBus(Redis.from_url(REDIS_URL, decode_responses=True, client_name=name), prefix=prefix)
    writer = make()
    try:
        sub = await reader.join("alice/s1")
        await writer.publish("alice/s1", "0")
        assert await sub.get() == "0"
        admin = Redis.from_url(REDIS_URL, decode_responses=True)
        ours = [c["id"] for c in await admin.client_list() if c.get("name") == name]
        for client_id in ours:  # only this reader's own connections, never anyone else's
            await admin.client_kill_filter(_id=client_id)
        await admin.aclose()
        assert ours
        for n in range(1, 6):
            await writer.publish("alice/s1", str(n))
        assert [await sub.get() for _ in range(5)] == ["1", "2", "3", "4", "5"]
        await writer.publish("alice/s1", "6")
        assert await sub.get() == "6"
        assert sub.queued == 0
    finally:
        await reader.aclose()


async def test_publish_without_redis_raises_bus_unavailable_and_closing_releases_waiters() -> None:
    bus = RedisBus.from_url(CLOSED)
    sub = bus.subscribe("alice/s1")  # the reader starts, fails to connect and keeps retrying
    waiting = asyncio.create_task(sub.ready())
    with pytest.raises(BusUnavailable) as caught:
        await bus.publish("alice/s1", "x")
    assert caught.value.status == 503 and caught.value.retryable
    assert "hunter2" not in caught.value.message
    assert not waiting.done()
    await bus.aclose()
    await waiting  # a subscription never admitted is released, not left hanging
    assert sub.queued == 0


async def test_build_bus_is_local_without_a_url_and_refuses_a_redis_that_does_not_answer(
    tmp_path: Path,
) -> None:
    local = await build_bus(make_settings(tmp_path))
    assert isinstance(local, LocalBus)
    with pytest.raises(ConfigError) as caught:
        await build_bus(make_settings(tmp_path, redis_url=CLOSED))
    assert caught.value.field == "PARLEY_REDIS_URL"
    assert "PARLEY_REDIS_URL" in caught.value.message and "127.0.0.1:9" in caught.value.message
    assert "hunter2" not in caught.value.message


async def test_build_bus_gives_a_redis_bus_that_works(redis: tuple[str, BusFactory], tmp_path: Path) -> None:
    bus = await build_bus(make_settings(tmp_path, redis_url=REDIS_URL))
    try:
        assert isinstance(bus, RedisBus)
        sub = await bus.join("parley-test-build/s1")
        await bus.publish("parley-test-build/s1", "hello")
        assert await sub.get() == "hello"
    finally:
        await bus.aclose()
        client = Redis.from_url(REDIS_URL)
        await client.delete("parley:bus:t:parley-test-build/s1")
        await client.aclose()


async def test_closing_ends_a_reader_blocked_in_xread_without_waiting_out_the_block(
    redis: tuple[str, BusFactory],
) -> None:
    prefix, _ = redis
    # a block far longer than the test's own timeout: only an interrupted read lets aclose return
    bus = RedisBus.from_url(REDIS_URL, prefix=prefix, block_ms=3_600_000)
    sub = await bus.join("alice/s1")
    await bus.publish("alice/s1", "x")
    assert await sub.get() == "x"  # the reader is back in its blocking XREAD
    tasks = list(bus._tasks)
    await bus.aclose()
    assert tasks and all(task.done() for task in tasks)


async def test_a_publish_cancelled_mid_command_ends_its_task_cancelled(redis: tuple[str, BusFactory]) -> None:
    """redis-py finishes a cancelled command and returns: the cancel must not be lost with it (a
    stopped turn whose cancel landed in a chunk's publish streamed on)."""
    _, make = redis
    bus = make()
    await bus.publish("alice/s1", "warm")  # the connection is open: each publish is one round trip
    swallowed = cancelled = 0
    for n in range(120):
        task = asyncio.create_task(bus.publish("alice/s1", str(n)))
        for _ in range(n % 6):  # land the cancel at different points of the command
            await asyncio.sleep(0)
        if not task.cancel():
            await task  # it had already finished: nothing to lose
            continue
        try:
            await task
            swallowed += 1
        except asyncio.CancelledError:
            cancelled += 1
    assert swallowed == 0 and cancelled > 0
