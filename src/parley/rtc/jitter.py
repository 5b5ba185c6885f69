"""A jitter buffer for the server's inbound Opus that releases an in-order packet at once.

aiortc's `JitterBuffer` releases a frame only once `prefetch` complete frames follow it, so even
at prefetch 1 every packet waits for the next one (20 ms), and the VAD sees the end of each
utterance that much late. `ImmediateJitterBuffer` releases the packet it was waiting for (the
next sequence number) as it arrives. Anything else is held, in sequence-number order:

- reordered: a packet ahead of a gap waits in its slot; when the gap fills, the packets come out
  in order, one per arriving packet (aiortc's receiver takes one frame per `add`);
- lost (aiortc's audio receivers send no NACKs: a missing packet comes late or never): once
  `skip_after` packets wait behind the gap (a few packet times), it is skipped; a packet too far
  ahead for the ring (`capacity`) makes room by dropping the oldest held, as aiortc does;
- late (behind the next expected) or duplicate: dropped, as aiortc does; one far behind
  (`MAX_MISORDER`: a restarted stream) starts the buffer over.

Since one frame comes out per packet in, a filled or skipped gap would leave the buffer a packet
or two behind for good; after `catch_up_after` releases that each left a packet waiting, the
oldest waiting packet is dropped (one 20 ms hole, once, instead of 20 ms more latency for the
rest of the call).

Audio only: each Opus packet is a frame of its own (RFC 7587), so no packets are joined.
"""

from __future__ import annotations

from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

#: packets that may wait behind a missing one before it is given up (~40 ms of 20 ms Opus)
SKIP_AFTER = 2
#: consecutive releases that leave a packet waiting before the oldest waiting one is dropped
CATCH_UP_AFTER = 25


class ImmediateJitterBuffer(JitterBuffer):
    """aiortc's `JitterBuffer` interface (`add`, `capacity`, `remove`), for one audio stream."""

    def __init__(
        self, capacity: int = 16, *, skip_after: int = SKIP_AFTER, catch_up_after: int = CATCH_UP_AFTER
    ) -> None:
        super().__init__(capacity=capacity, prefetch=1)
        # the base's ring and next sequence number, used as they are: check this aiortc has them
        ring = getattr(self, "_packets", None)
        if not (isinstance(ring, list) and len(ring) == capacity and hasattr(self, "_origin")):
            raise TypeError("aiortc's JitterBuffer keeps its packets elsewhere than in aiortc 1.x")
        if not 1 <= skip_after < capacity:
            raise ValueError(f"skip_after must be in 1..{capacity - 1}, not {skip_after}")
        self._skip_after = skip_after
        self._catch_up_after = catch_up_after
        self._behind = 0  # consecutive releases after which a packet was still waiting
        #: packets given up on: skipped gaps, and packets dropped (late, to make room, to catch up)
        self.skipped = 0
        self.dropped = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._origin is None:
            self._origin = seq
        ahead = uint16_add(seq, -self._origin)
        behind = uint16_add(self._origin, -seq)
        if behind < ahead:  # before the next expected one
            if behind >= MAX_MISORDER:  # not late but a stream that started over
                self._clear(seq)
                ahead = 0
            else:
                self.dropped += 1
                return False, None
        if ahead >= self._capacity:  # too far ahead for the ring: drop the oldest held
            excess = ahead - self._capacity + 1
            if excess >= self._capacity:
                self._clear(seq)
            else:
                self._advance(excess)
        self._packets[seq % self._capacity] = packet
        return False, self._release()

    def _release(self) -> JitterFrame | None:
        assert self._origin is not None
        head = self._packets[self._origin % self._capacity]
        if head is None:
            waiting = sum(p is not None for p in self._packets)
            if waiting < self._skip_after:
                return None
            while self._packets[self._origin % self._capacity] is None:  # give the gap up
                self._origin = uint16_add(self._origin, 1)
                self.skipped += 1
            head = self._packets[self._origin % self._capacity]
            assert head is not None
        self.remove(1)
        if self._packets[self._origin % self._capacity] is None:
            self._behind = 0
        else:
            self._behind += 1
            if self._behind >= self._catch_up_after:
                self._behind = 0
                self.dropped += 1
                self.remove(1)
        return JitterFrame(data=head._data, timestamp=head.timestamp)  # type: ignore[attr-defined]

    def _advance(self, count: int) -> None:
        """Move the next expected sequence number on by `count`, dropping what that passes."""
        for _ in range(count):
            assert self._origin is not None
            pos = self._origin % self._capacity
            if self._packets[pos] is not None:
                self.dropped += 1
            else:
                self.skipped += 1
            self._packets[pos] = None
            self._origin = uint16_add(self._origin, 1)

    def _clear(self, origin: int) -> None:
        self.dropped += sum(p is not None for p in self._packets)
        self._packets = [None] * self._capacity
        self._origin = origin
        self._behind = 0
