"""The bus contract, on LocalBus and RedisBus alike: order, fan-out, unsubscribe, overflow, resume."""

from __future__ import annotations

import pytest

from parley.bus.base import Bus, Subscription, parse_id
from parley.errors import InvalidInput


async def take(sub: Subscription, count: int) -> list[str]:
    return [await sub.get() for _ in range(count)]


async def test_one_subscriber_gets_every_event_in_publish_order_with_growing_ids(bus: Bus) -> None:
    sub = await bus.join("alice/s1")
    sent = [f'{{"n":{n}}}' for n in range(200)]
    ids = [await bus.publish("alice/s1", event) for event in sent]
    assert ids == sorted(ids, key=parse_id) and len(set(ids)) == len(ids)
    got = []
    for _ in sent:
        got.append(await sub.get())
        assert sub.last_id == ids[len(got) - 1]
    assert got == sent
    assert sub.queued == 0


async def test_every_subscriber_of_a_topic_gets_every_event_and_other_topics_get_none(bus: Bus) -> None:
    subs = [await bus.join("alice/s1") for _ in range(50)]
    other = await bus.join("bob/s1")
    assert bus.subscriber_count("alice/s1") == 50
    for n in range(20):
        await bus.publish("alice/s1", str(n))
    await bus.publish("bob/s1", "bob's")
    for sub in subs:
        assert await take(sub, 20) == [str(n) for n in range(20)]
    # bob's one event arrived, and only it: alice's events never reach bob's topic
    assert await other.get() == "bob's"
    assert other.queued == 0


async def test_an_unsubscribed_inbox_receives_nothing_more(bus: Bus) -> None:
    gone = await bus.join("alice/s1")
    stays = await bus.join("alice/s1")
    await bus.publish("alice/s1", "before")
    assert await gone.get() == "before"
    bus.unsubscribe(gone)
    assert bus.subscriber_count("alice/s1") == 1
    await bus.publish("alice/s1", "after")
    assert await take(stays, 2) == ["before", "after"]  # "after" was fanned out by now
    assert gone.queued == 0
    bus.unsubscribe(stays)
    assert bus.subscriber_count("alice/s1") == 0


async def test_a_subscriber_that_falls_behind_is_marked_overflowed_and_others_are_not(bus: Bus) -> None:
    slow = await bus.join("alice/s1", maxsize=4)
    fast = await bus.join("alice/s1")
    for n in range(10):
        await bus.publish("alice/s1", str(n))
    assert await take(fast, 10) == [str(n) for n in range(10)]
    assert slow.overflowed and not fast.overflowed
    assert await slow.get() == ""


async def test_a_subscriber_resumes_after_the_last_id_it_saw_with_no_gap_and_no_duplicate(bus: Bus) -> None:
    first = await bus.join("alice/s1")
    for n in range(5):
        await bus.publish("alice/s1", str(n))
    assert await take(first, 3) == ["0", "1", "2"]
    seen = first.last_id
    bus.unsubscribe(first)  # the socket dropped after it had sent event 2
    for n in range(5, 8):
        await bus.publish("alice/s1", str(n))
    again = await bus.join("alice/s1", after=seen)
    assert not again.gap
    await bus.publish("alice/s1", "8")
    assert await take(again, 6) == ["3", "4", "5", "6", "7", "8"]
    assert again.queued == 0


async def test_resuming_while_others_read_the_topic_live_replays_only_to_the_resumer(bus: Bus) -> None:
    live = await bus.join("alice/s1")
    ids = [await bus.publish("alice/s1", str(n)) for n in range(6)]
    assert await take(live, 6) == [str(n) for n in range(6)]
    late = await bus.join("alice/s1", after=ids[1])
    await bus.publish("alice/s1", "6")
    assert await take(late, 5) == ["2", "3", "4", "5", "6"]
    assert await live.get() == "6"
    assert live.queued == 0 and late.queued == 0


async def test_resuming_after_an_id_the_bus_no_longer_keeps_says_there_is_a_gap(bus: Bus) -> None:
    await bus.publish("alice/s1", "kept")
    sub = await bus.join("alice/s1", after="1-1")
    assert sub.gap
    await bus.publish("alice/s1", "live")
    assert await sub.get() == "live"  # live events still arrive; the caller reloads the rest


def test_an_id_that_is_not_one_is_refused_naming_the_field(bus: Bus) -> None:
    with pytest.raises(InvalidInput) as caught:
        bus.subscribe("alice/s1", after="last")
    assert caught.value.field == "after"
