"""The server's audio jitter buffer, fed synthetic 20 ms Opus packets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from parley.rtc.jitter import ImmediateJitterBuffer
from parley.rtc.tracks import audio_jitter_buffer, shorten_jitter_buffer


def _packet(seq: int) -> RtpPacket:
    seq &= 0xFFFF
    packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=(960 * seq) & 0xFFFFFFFF, payload=b"")
    packet._data = seq.to_bytes(2, "big")  # type: ignore[attr-defined]  # what aiortc's depayloader sets
    return packet


def _feed(buffer: ImmediateJitterBuffer, seqs: list[int]) -> list[int | None]:
    """Per packet in, the sequence number of the frame it released (None: none)."""
    out: list[int | None] = []
    for seq in seqs:
        pli, frame = buffer.add(_packet(seq))
        assert pli is False
        out.append(None if frame is None else int.from_bytes(frame.data, "big"))
    return out


def test_an_in_order_packet_is_released_as_it_arrives() -> None:
    buffer = ImmediateJitterBuffer()
    assert _feed(buffer, list(range(100, 140))) == list(range(100, 140))
    frame = buffer.add(_packet(140))[1]
    assert frame is not None and frame.timestamp == 960 * 140
    assert buffer.skipped == buffer.dropped == 0


def test_reordered_packets_come_out_in_order() -> None:
    buffer = ImmediateJitterBuffer()
    # 3 overtakes 2: it waits for 2; then one frame per packet in until the buffer catches up
    assert _feed(buffer, [0, 1, 3, 2, 4, 5]) == [0, 1, None, 2, 3, 4]
    assert buffer.skipped == buffer.dropped == 0


def test_packets_after_a_lost_one_still_come_out() -> None:
    buffer = ImmediateJitterBuffer(skip_after=2)
    assert _feed(buffer, [0, 1, 3, 4, 5, 6]) == [0, 1, None, 3, 4, 5]
    assert buffer.skipped == 1
    # the lost one arriving after all is too late: dropped, nothing held up
    assert _feed(buffer, [2, 7]) == [None, 6]
    assert buffer.dropped == 1


def test_a_buffer_left_behind_catches_up() -> None:
    buffer = ImmediateJitterBuffer(catch_up_after=5)
    # a gap filled late leaves one packet waiting per release; after 5 such, one is dropped
    out = _feed(buffer, [0, 2, 1, *range(3, 12)])
    assert out == [0, None, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    assert buffer.dropped == 1
    assert _feed(buffer, [12, 13]) == [12, 13]  # in step again: at once


def test_a_packet_too_far_ahead_makes_room_by_dropping_the_oldest() -> None:
    buffer = ImmediateJitterBuffer(capacity=16, skip_after=15)
    assert _feed(buffer, [0, *range(2, 16)]) == [0] + [None] * 14  # 1 lost: 2..15 wait
    # 17 needs 1's slot: 1 is given up, and 2 comes out
    assert _feed(buffer, [17]) == [2]
    assert _feed(buffer, [18, 19]) == [3, 4]
    assert buffer.skipped == 1


def test_the_sequence_number_wraps_around() -> None:
    buffer = ImmediateJitterBuffer()
    assert _feed(buffer, [65533, 65534, 65535, 0, 1]) == [65533, 65534, 65535, 0, 1]
    assert _feed(buffer, [3, 2, 4]) == [None, 2, 3]  # reordered across nothing special
    buffer = ImmediateJitterBuffer()
    assert _feed(buffer, [65534, 0, 65535, 1, 2]) == [65534, None, 65535, 0, 1]  # reordered across the wrap
    buffer = ImmediateJitterBuffer(skip_after=2)
    assert _feed(buffer, [65534, 0, 1, 2]) == [65534, None, 0, 1]  # lost at the wrap


def test_duplicates_and_a_restarted_stream() -> None:
    buffer = ImmediateJitterBuffer()
    assert _feed(buffer, [10, 11, 11, 10, 12]) == [10, 11, None, None, 12]
    assert _feed(buffer, [5000, 5001]) == [5000, 5001]  # far ahead, past the whole ring: over
    buffer = ImmediateJitterBuffer()
    assert _feed(buffer, [30000, 30001, 20000, 20001]) == [30000, 30001, 20000, 20001]  # far behind: over


def test_skip_after_must_fit_the_ring() -> None:
    with pytest.raises(ValueError, match="skip_after"):
        ImmediateJitterBuffer(capacity=16, skip_after=16)


def test_an_aiortc_whose_buffer_looks_different_keeps_its_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    default = JitterBuffer(capacity=16, prefetch=4)
    receiver = SimpleNamespace(_RTCRtpReceiver__jitter_buffer=default)

    def other_init(self: JitterBuffer, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        self._capacity = capacity  # and its packets somewhere else

    monkeypatch.setattr(JitterBuffer, "__init__", other_init)
    assert shorten_jitter_buffer(receiver) is False  # type: ignore[arg-type]
    assert audio_jitter_buffer(receiver) is default  # type: ignore[arg-type]
    assert "keeping its default" in caplog.text
