"""What only the in-process bus has to show: its ids do not repeat across processes."""

from __future__ import annotations

from parley.bus.memory import LocalBus


async def test_an_id_from_before_a_restart_is_a_gap_not_a_strangers_event() -> None:
    before = LocalBus()
    seen = [await before.publish("alice/s1", f"old {n}") for n in range(3)]
    after = LocalBus()  # the process restarted: the same topic fills up again
    for n in range(5):
        await after.publish("alice/s1", f"new {n}")
    resumed = after.subscribe("alice/s1", after=seen[1])
    assert resumed.gap and resumed.queued == 0
