"""The callers of the voice bench's WebRTC measurement, in a process of their own.

`voice.py` starts `main` in a spawned process and answers its offers with the server's peers, so
the server's event loop and CPU figure carry Parley's side of each call only. Both processes stamp
with `time.perf_counter()` (CLOCK_MONOTONIC on Linux: one clock for the whole machine), so a true
end of speech stamped here compares with the server's stamps there.

Protocol over one duplex `multiprocessing` pipe, pickled tuples:
    client -> server: ("offer", index, sdp), one per call; ("done", index, Heard), one per call
    server -> client: ("answer", index, sdp), one per offer
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from voice_common import AUDIBLE_RMS, RATE, STAGGER_SECS, Timeline, schedule, sleep_until, timeline

OUT_RATE, OUT_FRAME = 48000, 960
ANSWER_TIMEOUT = 30.0


@dataclass(slots=True)
class Heard:
    """One call seen from the caller: true ends of speech, audible reply frames decoded."""

    ends: list[float] = field(default_factory=list)
    packets: list[float] = field(default_factory=list)
    call_s: float = 0.0


def main(conn: Connection, voice: np.ndarray, calls: int, turns: int, prefetch: int | None) -> None:
    """The spawned process's entry point."""
    asyncio.run(_callers(conn, voice, calls, turns, prefetch))


async def _callers(conn: Connection, voice: np.ndarray, calls: int, turns: int, prefetch: int | None) -> None:
    loop = asyncio.get_running_loop()
    answers: dict[int, asyncio.Future[str]] = {i: loop.create_future() for i in range(calls)}

    async def read_answers() -> None:
        for _ in range(calls):
            _, index, sdp = await asyncio.to_thread(conn.recv)
            answers[index].set_result(sdp)

    async def staggered(i: int) -> None:
        await asyncio.sleep(STAGGER_SECS * i / calls)
        heard = await _call(conn, i, timeline(voice, turns, i), answers[i])
        conn.send(("done", i, heard))

    reader = asyncio.create_task(read_answers())
    with audio_prefetch(prefetch):
        await asyncio.gather(*(staggered(i) for i in range(calls)))
    await reader


async def _call(conn: Connection, index: int, line: Timeline, answer: asyncio.Future[str]) -> Heard:
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    heard = Heard()
    started: list[float] = []

    client = RTCPeerConnection()
    mic = mic_track(line, heard, started)
    client.addTrack(mic)
    readers: list[asyncio.Task[None]] = []

    async def listen(track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if np.sqrt(np.mean(frame.to_ndarray().astype(np.float64) ** 2)) > AUDIBLE_RMS:
                heard.packets.append(time.perf_counter())

    client.on("track", lambda track: readers.append(asyncio.create_task(listen(track))))
    try:
        await client.setLocalDescription(await client.createOffer())
        conn.send(("offer", index, client.localDescription.sdp))
        sdp = await asyncio.wait_for(answer, ANSWER_TIMEOUT)
        await client.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        await mic.done.wait()
        if started:
            heard.call_s = time.perf_counter() - started[0]
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await client.close()
    return heard


def mic_track(line: Timeline, heard: Heard, started: list[float], gate: asyncio.Event | None = None) -> Any:
    """The caller's microphone: `line` in real time from its first frame, stamping each true end
    of speech into `heard.ends`; `done` is set after the last frame. With `gate`, silence is sent
    until it is set, and `line` starts then (a call whose far end joins late)."""
    import av
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    from parley.audio.pcm import resample

    pcm48 = resample(line.pcm, RATE, OUT_RATE)

    class Mic(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.sent = 0
            self.waited = 0
            self.done = asyncio.Event()

        async def recv(self) -> av.AudioFrame:
            if self.readyState != "live":
                raise MediaStreamError
            if gate is not None and not gate.is_set():
                await asyncio.sleep(OUT_FRAME / OUT_RATE)
                self.waited += 1
                return self._frame(bytes(OUT_FRAME * 2))
            if not started:
                started.append(time.perf_counter())
            i = self.sent
            await sleep_until(schedule(started[0], i))
            chunk = pcm48[i * OUT_FRAME * 2 : (i + 1) * OUT_FRAME * 2] if i < line.frames else b""
            chunk += bytes(OUT_FRAME * 2 - len(chunk))
            if i + 1 in line.ends:
                heard.ends.append(time.perf_counter())
            self.sent += 1
            if self.sent >= line.frames:
                self.done.set()
            return self._frame(chunk)

        def _frame(self, pcm: bytes) -> av.AudioFrame:
            frame = av.AudioFrame.from_ndarray(
                np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts = OUT_RATE, (self.sent + self.waited) * OUT_FRAME
            frame.time_base = fractions.Fraction(1, OUT_RATE)
            return frame

    return Mic()


@contextmanager
def audio_prefetch(frames: int | None) -> Iterator[None]:
    """Diagnostic: aiortc holds 4 received audio packets (80 ms) in every receiver's jitter
    buffer before playing one out; with `frames` set, the callers' receivers hold that many."""
    if frames is None:
        yield
        return
    from aiortc import rtcrtpreceiver
    from aiortc.jitterbuffer import JitterBuffer

    def jitter_buffer(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
        return JitterBuffer(capacity, prefetch if is_video else frames, is_video)

    rtcrtpreceiver.JitterBuffer = jitter_buffer  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        rtcrtpreceiver.JitterBuffer = JitterBuffer  # type: ignore[misc]
