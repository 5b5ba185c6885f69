"""Audio between aiortc and a VoiceCall: the outbound track, and the inbound track's reader.

Outbound: aiortc's sender calls `recv()` in a loop and sends whatever it returns at once, so
the track paces itself (`FrameClock`: 20 ms per frame against a monotonic clock, except that the
first frame of a reply goes out as soon as it is queued) and asks the call for a frame only when
that frame is due. A barge-in that empties the playout between two `recv()`s is therefore silent
from the next frame on.

Inbound: aiortc decodes Opus to 48 kHz stereo frames of 960 samples; they are converted to the
pipeline's 16 kHz mono here (FFmpeg's resampler: microseconds per frame, fine on the loop).
aiortc's audio receivers hold 4 frames (80 ms) in their jitter buffer before releasing one, for
the jitter of the open internet (and even at 1 a frame waits for the next packet: 20 ms); the
server's receivers release an in-order packet at once and hold only what comes out of order
(`shorten_jitter_buffer`, `parley.rtc.jitter`): the VAD waits out a 200 ms hangover anyway, and a
late packet costs it nothing a gap would not.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable

import av
from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from parley.audio.pcm import SAMPLE_WIDTH
from parley.providers.vad import SAMPLE_RATE
from parley.rtc.jitter import ImmediateJitterBuffer
from parley.voice.playout import FRAME_SAMPLES, OUT_RATE, SILENCE, FrameClock

log = logging.getLogger("parley.rtc")

_TIME_BASE = fractions.Fraction(1, OUT_RATE)
# where aiortc 1.x keeps a receiver's jitter buffer (name-mangled; no public way to size it)
_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"


class PlayoutTrack(MediaStreamTrack):
    """The assistant's voice: `source()` gives the next 20 ms of 48 kHz mono s16, or None (silence).

    `queued` (the playout's) is set when audio waits: after silence, it is sent without waiting
    for the next 20 ms tick.
    """

    kind = "audio"

    def __init__(
        self,
        source: Callable[[], bytes | None],
        *,
        queued: asyncio.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._source = source
        self._queued = queued
        self._frames = FrameClock(clock)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._frames.wait(self._queued)
        # Asked only now, when the frame is due: what a barge-in dropped is never sent.
        pcm = self._source()
        self._frames.sent(pcm is not None)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm or SILENCE)
        frame.pts = pts
        frame.sample_rate = OUT_RATE
        frame.time_base = _TIME_BASE
        return frame


def audio_jitter_buffer(receiver: RTCRtpReceiver) -> JitterBuffer | None:
    """The jitter buffer of an aiortc audio receiver, or None where this aiortc keeps it elsewhere."""
    buffer = getattr(receiver, _JITTER_ATTR, None)
    return buffer if isinstance(buffer, JitterBuffer) else None


def shorten_jitter_buffer(receiver: RTCRtpReceiver) -> bool:
    """Make an audio receiver release each in-order packet as it arrives (aiortc: 4 frames later).

    Out-of-order packets are still held and released in order (`ImmediateJitterBuffer`). Call
    before media flows (between setRemoteDescription and the answer). An aiortc whose receiver no
    longer looks as expected keeps its default buffering, with a warning.
    """
    buffer = audio_jitter_buffer(receiver)
    if buffer is None:
        log.warning(
            "aiortc's audio receiver has no jitter buffer where Parley expects one: inbound audio "
            "keeps aiortc's default buffering (~80 ms more per call)"
        )
        return False
    try:
        setattr(receiver, _JITTER_ATTR, ImmediateJitterBuffer(capacity=buffer.capacity))
    except (TypeError, AttributeError, AssertionError, ValueError):
        log.warning("could not replace aiortc's audio jitter buffer; keeping its default", exc_info=True)
        return False
    return True


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
