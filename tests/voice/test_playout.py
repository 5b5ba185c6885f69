"""The outbound frame schedule (`FrameClock`) on a clock the test moves by hand."""

from __future__ import annotations

import asyncio

import pytest

from parley.voice.playout import FRAME_BYTES, FRAME_SAMPLES, FrameClock, Playout


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_first_frame_of_a_reply_goes_out_when_queued_not_at_the_next_tick() -> None:
    clock, playout = Clock(), Playout()
    frames = FrameClock(clock)
    assert await frames.wait(playout.queued) == 0  # the first frame of the call: at once
    frames.sent(playout.read_frame() is not None)  # silence
    assert frames.due == pytest.approx(0.02)

    clock.now = 0.007  # 13 ms before the next tick, the reply's audio is queued
    waiting = asyncio.create_task(frames.wait(playout.queued))
    await asyncio.sleep(0)
    assert not waiting.done()
    segment = playout.begin("Hi.")
    playout.write(segment, bytes(3 * FRAME_BYTES))
    # Released by the write (the clock still says 0.007): the talkspurt runs from here, and
    # its timestamps stay contiguous.
    assert await waiting == FRAME_SAMPLES
    assert frames.due == pytest.approx(0.027)
    frames.sent(playout.read_frame() is not None)
    for n in (2, 3):
        clock.now = 0.007 + (n - 1) * 0.02  # on time: no wait
        assert await frames.wait(playout.queued) == n * FRAME_SAMPLES
        frames.sent(playout.read_frame() is not None)
    assert not playout.playing
    # The reply is over: silence goes back onto the original 20 ms grid (one longer gap), so
    # the timestamps never run more than a frame ahead of real time.
    clock.now = 0.047
    assert await frames.wait(playout.queued) == 4 * FRAME_SAMPLES
    frames.sent(playout.read_frame() is not None)
    assert frames.due == pytest.approx(0.10)


async def test_audio_queued_between_two_silent_frames_goes_out_without_waiting() -> None:
    clock, playout = Clock(), Playout()
    frames = FrameClock(clock)
    await frames.wait(playout.queued)
    frames.sent(False)
    clock.now = 0.001
    playout.write(playout.begin("Hi."), bytes(FRAME_BYTES))
    assert await asyncio.wait_for(frames.wait(playout.queued), 1.0) == FRAME_SAMPLES
    assert frames.due == pytest.approx(0.021)


async def test_within_a_talkspurt_frames_keep_the_20_ms_grid() -> None:
    clock, playout = Clock(), Playout()
    frames = FrameClock(clock)
    playout.write(playout.begin("Hi."), bytes(4 * FRAME_BYTES))
    await frames.wait(playout.queued)
    frames.sent(playout.read_frame() is not None)
    clock.now = 0.019  # audio is queued, but the last frame carried audio too: wait for the tick
    assert await frames.wait(playout.queued) == FRAME_SAMPLES
    assert frames.due == pytest.approx(0.04)


def test_the_queued_flag_follows_the_frames() -> None:
    playout = Playout()
    assert not playout.queued.is_set()
    segment = playout.begin("Hi.")
    playout.write(segment, bytes(FRAME_BYTES // 2))
    assert not playout.queued.is_set()  # half a frame is not playable yet
    playout.end(segment)
    assert playout.queued.is_set()
    assert playout.read_frame() is not None
    assert not playout.queued.is_set()
    playout.write(playout.begin("Again."), bytes(2 * FRAME_BYTES))
    playout.flush()
    assert not playout.queued.is_set()
