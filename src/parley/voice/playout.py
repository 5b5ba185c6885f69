"""The outbound audio of a call: 20 ms frames at 48 kHz, pulled by the transport in real time.

Synthesis runs ahead of playback (TTS is faster than real time), so the queue holds the rest of
the reply; a barge-in drops it all in one call (`flush`) and the transport's very next frame is
silence. Every frame remembers which text chunk (`Segment`) it voices, so the part of the reply
the user actually heard can be recovered from the frames that were read: whole segments plus a
proportional, word-aligned prefix of the one that was playing.

The transport owns the pace (aiortc's sender calls `recv()` every 20 ms; `pace()` does the same
for in-process use); the playout only answers "what is the next frame" without ever blocking, and
sets `queued` when audio is waiting, so a transport that is sending silence can send a reply's
first frame at once instead of at its next tick (`FrameClock`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from parley.audio.pcm import SAMPLE_WIDTH

OUT_RATE = 48000
FRAME_SECS = 0.02
FRAME_SAMPLES = int(OUT_RATE * FRAME_SECS)
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH
SILENCE = bytes(FRAME_BYTES)


@dataclass(slots=True, eq=False)
class Segment:
    """One text chunk's audio: how much was queued and how much the transport has taken."""

    text: str
    written: int = 0  # samples queued
    played: int = 0  # samples read by the transport
    complete: bool = False  # synthesis finished: `written` is the whole length


class Resampler:
    """Mono s16 PCM at any rate -> `to_rate`, streaming (one FFmpeg resampler per segment).

    A resampler keeps a few samples of filter state; feeding one segment's pieces through the
    same instance avoids clicks at piece edges. Cheap enough to run on the loop: ~0.1 ms for a
    second of 24 kHz speech.
    """

    def __init__(self, to_rate: int = OUT_RATE) -> None:
        self.to_rate = to_rate
        self._rate: int | None = None
        self._av: object | None = None
        self._odd = b""

    def convert(self, pcm: bytes, rate: int) -> bytes:
        pcm = self._odd + pcm
        cut = len(pcm) - len(pcm) % SAMPLE_WIDTH
        pcm, self._odd = pcm[:cut], pcm[cut:]
        if not pcm:
            return b""
        if rate == self.to_rate and self._av is None:
            self._rate = rate
            return pcm
        if self._rate != rate or self._av is None:
            out = self.flush()
            self._rate = rate
            self._av = _new_resampler(self.to_rate)
            return out + _run(self._av, pcm, rate)
        return _run(self._av, pcm, rate)

    def flush(self) -> bytes:
        """The samples still held in the filter; the next `convert` starts fresh."""
        resampler, self._av = self._av, None
        if resampler is None:
            return b""
        return _run(resampler, None, self._rate or self.to_rate)


def _new_resampler(rate: int) -> object:
    import av

    return av.AudioResampler(format="s16", layout="mono", rate=rate)


def _run(resampler: object, pcm: bytes | None, rate: int) -> bytes:
    import av
    import numpy as np

    assert isinstance(resampler, av.AudioResampler)
    frame: av.AudioFrame | None = None
    if pcm is not None:
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
    out = bytearray()
    for piece in resampler.resample(frame):
        out += bytes(piece.planes[0])[: piece.samples * SAMPLE_WIDTH]
    return bytes(out)


class Playout:
    """The queue of outbound frames of one call; one reply ("turn") at a time.

    `on_started(at)` is called (synchronously, from `read_frame`) when the first frame of a turn
    goes out: the moment the assistant starts speaking, and the last stage of the turn's metrics.
    """

    def __init__(
        self,
        *,
        on_started: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._on_started = on_started
        self._clock = clock
        self._frames: deque[tuple[Segment, bytes]] = deque()
        self._segments: list[Segment] = []
        self._tail = bytearray()  # the current segment's samples short of a whole frame
        self._drained = asyncio.Event()
        self._drained.set()
        #: set while frames wait to be read: wakes a transport that is sending silence
        self.queued = asyncio.Event()
        self.first_frame_at: float | None = None
        #: when the last flush dropped audio (a barge-in), for measurements
        self.flushed_at: float | None = None
        self.frames_sent = 0
        #: the text chunk whose audio the last frame read carried (a transport announcing sentences)
        self.segment: Segment | None = None

    @property
    def playing(self) -> bool:
        """Audio is queued: the transport is sending the assistant's voice now."""
        return bool(self._frames)

    @property
    def queued_seconds(self) -> float:
        return len(self._frames) * FRAME_SECS

    def start_turn(self) -> None:
        """Forget the previous reply's segments (their audio has played or was flushed)."""
        self._segments = []
        self._tail.clear()
        self.first_frame_at = None

    def begin(self, text: str) -> Segment:
        segment = Segment(text)
        self._segments.append(segment)
        self._tail.clear()
        return segment

    def write(self, segment: Segment, pcm: bytes) -> None:
        """Queue 48 kHz mono s16 audio of `segment`; whole frames become playable at once."""
        self._tail += pcm
        whole = len(self._tail) - len(self._tail) % FRAME_BYTES
        for offset in range(0, whole, FRAME_BYTES):
            self._frames.append((segment, bytes(self._tail[offset : offset + FRAME_BYTES])))
        del self._tail[:whole]
        segment.written += whole // SAMPLE_WIDTH
        if whole:
            self._drained.clear()
            self.queued.set()

    def end(self, segment: Segment) -> None:
        """The segment's synthesis is over: pad its last partial frame with silence."""
        if self._tail:
            samples = len(self._tail) // SAMPLE_WIDTH
            self._frames.append((segment, bytes(self._tail) + bytes(FRAME_BYTES - len(self._tail))))
            segment.written += samples
            self._tail.clear()
            self._drained.clear()
            self.queued.set()
        segment.complete = True

    def read_frame(self) -> bytes | None:
        """The next 20 ms frame, or None when nothing is queued (the transport sends silence)."""
        if not self._frames:
            self._drained.set()
            self.queued.clear()
            return None
        segment, frame = self._frames.popleft()
        self.segment = segment
        segment.played = min(segment.written, segment.played + FRAME_SAMPLES)
        self.frames_sent += 1
        if self.first_frame_at is None:
            self.first_frame_at = self._clock()
            if self._on_started is not None:
                self._on_started(self.first_frame_at)
        if not self._frames:
            self._drained.set()
            self.queued.clear()
        return frame

    async def wait_drained(self) -> None:
        """Until the transport has taken every queued frame."""
        await self._drained.wait()

    def heard(self) -> str:
        """The text of the audio read so far in this turn, cut at a word boundary."""
        parts: list[str] = []
        for segment in self._segments:
            if segment.played <= 0:
                break
            if segment.complete and segment.played >= segment.written:
                parts.append(segment.text)
                continue
            parts.append(text_prefix(segment.text, segment.played / max(1, segment.written)))
            break
        return " ".join(p for p in parts if p)

    def flush(self) -> str:
        """Drop every queued frame now (a barge-in); returns what was heard of this turn."""
        heard = self.heard()
        if self._frames or self._tail:
            self.flushed_at = self._clock()
        self._frames.clear()
        self._tail.clear()
        self._drained.set()
        self.queued.clear()
        return heard


def text_prefix(text: str, fraction: float) -> str:
    """The first `fraction` of `text`, cut back to the last whole word."""
    if fraction >= 1.0:
        return text
    n = int(len(text) * max(0.0, fraction))
    if n < len(text) and not text[n].isspace():
        n = text.rfind(" ", 0, n + 1)
        if n < 0:
            return ""
    return text[:n].rstrip(" ,;:")


class FrameClock:
    """When each outbound frame is due, and its timestamp (pts, in 48 kHz samples).

    A frame every 20 ms on an absolute schedule (no drift), with one exception: while the transport
    is sending silence, audio queued in the playout goes out at once rather than at the next tick
    (which cost ~10 ms on average, up to 20, before the first frame of every reply). The
    talkspurt then runs early by that much, 20 ms apart from its first frame, and falls back onto
    the original grid at the first silent frame after it (one gap of up to 40 ms). So the pts stay
    contiguous and never run more than a frame ahead of real time, and the receiver only sees one
    early and one late packet per reply, which its jitter buffer absorbs.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start: float | None = None
        self._frames = 0  # frames handed out
        self._lead = 0.0  # seconds the current talkspurt runs ahead of the grid
        self._talking = False  # the last frame carried audio

    @property
    def due(self) -> float | None:
        """When the next frame is due on this clock (None before the first)."""
        if self._start is None:
            return None
        return self._start - self._lead + self._frames * FRAME_SECS

    async def wait(self, queued: asyncio.Event | None = None) -> int:
        """Until the next frame is due, or, after silence, until `queued` is set; its pts."""
        due = self.due
        if due is None:
            self._start = self._clock()
        elif (delay := due - self._clock()) > 0:
            if self._talking or queued is None:
                await asyncio.sleep(delay)
            elif await _wait_set(queued, delay):
                # the first frame of a talkspurt: out now, and the next ones 20 ms after it
                self._lead = max(0.0, due - self._clock())
        pts = self._frames * FRAME_SAMPLES
        self._frames += 1
        return pts

    def sent(self, audible: bool) -> None:
        """What the frame `wait` released carried: audio, or silence (which ends a talkspurt)."""
        self._talking = audible
        if not audible:
            self._lead = 0.0


async def _wait_set(event: asyncio.Event, timeout: float) -> bool:
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def pace(
    playout: Playout,
    sink: Callable[[float, bytes | None], None],
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Read a frame every 20 ms as a WebRTC sender would (`FrameClock`, as `PlayoutTrack` does).

    For in-process use (tests, benchmarks); over WebRTC the outbound track paces itself.
    `sink(at, frame)` gets None for silence.
    """
    frames = FrameClock(clock)
    while True:
        await frames.wait(playout.queued)
        frame = playout.read_frame()
        frames.sent(frame is not None)
        sink(clock(), frame)
