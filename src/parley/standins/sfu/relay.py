"""Fan-out of one published audio track to every session that pulls it.

A `PublishedTrack` reads the decoded frames of the publisher's aiortc receiver (48 kHz stereo,
960 samples each) for as long as the track lives, counts them, and hands each frame to every
`RelayTrack` subscribed to it. A relay is the track of a puller's sendonly transceiver: aiortc's
sender re-encodes what `recv()` returns, so audio is decoded and encoded once per puller (a real
SFU forwards the RTP packets untouched; this stand-in does not try to).

Reading never stops while the track is published, pulled or not: aiortc queues decoded frames
without a bound, so an unread receiver would grow for the whole life of the session.
"""

from __future__ import annotations

import asyncio
import fractions
import logging

import av
from aiortc import RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("parley.standins.sfu")

#: frames a relay holds for a slow sender before dropping the oldest (500 ms)
RELAY_QUEUE_FRAMES = 25


class RelayTrack(MediaStreamTrack):
    """What one puller's sender sends: the source's frames, restamped on the puller's own timeline."""

    kind = "audio"

    def __init__(self, source: PublishedTrack) -> None:
        super().__init__()
        self.source = source
        self.frames_sent = 0
        self._queue: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue(maxsize=RELAY_QUEUE_FRAMES)
        self._pts = 0

    def feed(self, frame: av.AudioFrame) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # a late frame is worth less than the next one
        self._queue.put_nowait(frame)

    def end(self) -> None:
        """The source is gone: the next `recv()` ends the track, so aiortc's sender stops."""
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        # A copy with this relay's own pts: every puller's encoder gets a gapless timeline of its
        # own, and no two encoders share (and restamp) one frame object.
        out = av.AudioFrame.from_ndarray(
            frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name
        )
        out.sample_rate = frame.sample_rate
        out.time_base = fractions.Fraction(1, frame.sample_rate)
        out.pts = self._pts
        self._pts += frame.samples
        self.frames_sent += 1
        return out

    def stop(self) -> None:
        if self.readyState == "live":
            self.source.unsubscribe(self)
            self.end()  # wakes a sender blocked in recv()
        super().stop()


class PublishedTrack:
    """A track a session published (`location: local`), with its received-media counters."""

    def __init__(self, session_id: str, name: str, receiver: RTCRtpReceiver) -> None:
        self.session_id = session_id
        self.name = name
        self.frames_received = 0
        self.bytes_received = 0  # decoded PCM: aiortc's receiver stats count packets, not bytes
        self.ended = False
        self._receiver = receiver
        self._track = receiver.track
        self._relays: set[RelayTrack] = set()
        self._task = asyncio.create_task(self._pump(), name=f"sfu-track:{session_id}:{name}")

    @property
    def has_media(self) -> bool:
        """Whether RTP arrived. Not decoded frames: the jitter buffer holds the first packets, and
        a publisher that saw its first bytes sent may announce the track at once."""
        return self.frames_received > 0 or bool(self._receiver.getSynchronizationSources())

    @property
    def pullers(self) -> int:
        return len(self._relays)

    def subscribe(self) -> RelayTrack:
        relay = RelayTrack(self)
        self._relays.add(relay)
        return relay

    def unsubscribe(self, relay: RelayTrack) -> None:
        self._relays.discard(relay)

    async def _pump(self) -> None:
        try:
            while True:
                try:
                    frame = await self._track.recv()
                except MediaStreamError:
                    return  # the publisher's transceiver or connection stopped
                if not isinstance(frame, av.AudioFrame):
                    continue
                self.frames_received += 1
                self.bytes_received += frame.samples * len(frame.layout.channels) * frame.format.bytes
                for relay in list(self._relays):
                    relay.feed(frame)
        finally:
            self.ended = True
            for relay in list(self._relays):
                relay.end()
            log.debug("track %s of session %s ended", self.name, self.session_id)

    async def aclose(self) -> None:
        """Stop reading and end every relay; pullers' senders then stop sending."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
