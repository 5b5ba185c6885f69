"""Audio between aiortc and a VoiceCall: the outbound track, and the inbound track's reader.

Outbound: aiortc's sender calls `recv()` in a loop and sends whatever it returns at once, so
the track paces itself on the frames' own timeline (pts / 48 kHz) against a monotonic clock,
20 ms per frame, and asks the call for a frame only when that frame is due. A barge-in that
empties the playout between two `recv()`s is therefore silent from the next frame on.

Inbound: aiortc decodes Opus to 48 kHz stereo frames of 960 samples; they are converted to the
pipeline's 16 kHz mono here (FFmpeg's resampler: microseconds per frame, fine on the loop).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from parley.audio.pcm import SAMPLE_WIDTH
from parley.providers.vad import SAMPLE_RATE
from parley.voice.playout import FRAME_SAMPLES, OUT_RATE, SILENCE

log = logging.getLogger("parley.rtc")

_TIME_BASE = fractions.Fraction(1, OUT_RATE)


class PlayoutTrack(MediaStreamTrack):
    """The assistant's voice: `source()` gives the next 20 ms of 48 kHz mono s16, or None (silence)."""

    kind = "audio"

    def __init__(
        self, source: Callable[[], bytes | None], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._source = source
        self._clock = clock
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = self._clock()
        else:
            self._pts += FRAME_SAMPLES
            await asyncio.sleep(max(0.0, self._start + self._pts / OUT_RATE - self._clock()))
        # Asked only now, when the frame is due: what a barge-in dropped is never sent.
        pcm = self._source() or SILENCE
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.pts = self._pts
        frame.sample_rate = OUT_RATE
        frame.time_base = _TIME_BASE
        return frame


class Downsampler:
    """Received frames (any rate and layout) -> 16 kHz mono s16 bytes, with filter state kept."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def convert(self, frame: av.AudioFrame) -> bytes:
        out = bytearray()
        for piece in self._resampler.resample(frame):
            out += bytes(piece.planes[0])[: piece.samples * SAMPLE_WIDTH]
        return bytes(out)


async def pump_inbound(
    track: MediaStreamTrack, push: Callable[[bytes], None], on_frame: Callable[[], None] | None = None
) -> None:
    """Feed a received audio track into `push` until the track ends (the peer closes it)."""
    downsampler = Downsampler()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        if on_frame is not None:
            on_frame()
        push(downsampler.convert(frame))
