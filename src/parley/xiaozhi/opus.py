"""Opus for XiaoZhi devices, on PyAV's libopus (already installed for aiortc).

`OpusDecoder`: a device's uplink packets -> 16 kHz mono s16 PCM (what `VoiceCall.push` takes).
`OpusEncoder`: 48 kHz mono PCM from the playout -> packets of exactly `FRAME_MS` at the rate the
server hello announced; the rest of a talkspurt is padded with silence (`flush`), because a device
drops longer packets and pads shorter ones, which sounds choppy.
One of each per connection: both keep codec state between packets.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from parley.audio.pcm import SAMPLE_WIDTH
from parley.errors import InvalidInput
from parley.voice.playout import Resampler
from parley.xiaozhi.protocol import FRAME_MS

UPLINK_RATE = 16000
#: the bit rate of downlink speech (libopus' default is 64 kbit/s, far more than a voice needs)
BIT_RATE = 32000


class OpusDecoder:
    def __init__(self, rate: int = UPLINK_RATE) -> None:
        self.rate = rate
        self._codec: Any = av.CodecContext.create("libopus", "r")
        self._codec.sample_rate = 48000
        self._codec.layout = "mono"
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def decode(self, packet: bytes) -> bytes:
        """PCM of one packet; InvalidInput (field `opus`) when it is not Opus."""
        if not packet:
            return b""
        try:
            frames = self._codec.decode(av.Packet(packet))
            out = bytearray()
            for frame in frames:
                for piece in self._resampler.resample(frame):
                    out += bytes(piece.planes[0])[: piece.samples * SAMPLE_WIDTH]
        except (av.error.FFmpegError, ValueError) as exc:
            raise InvalidInput(f"binary frame is not an Opus packet ({exc})", field="opus") from exc
        return bytes(out)


class OpusEncoder:
    def __init__(self, rate: int = 24000, *, source_rate: int = 48000) -> None:
        self.rate = rate
        self.frame_samples = rate * FRAME_MS // 1000
        self._frame_bytes = self.frame_samples * SAMPLE_WIDTH
        self._source_rate = source_rate
        self._resampler = Resampler(rate)
        self._pending = bytearray()
        self._pts = 0
        codec: Any = av.CodecContext.create("libopus", "w")
        codec.sample_rate = rate
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = BIT_RATE
        codec.options = {"frame_duration": str(FRAME_MS), "application": "voip"}
        codec.open()
        self._codec = codec

    def encode(self, pcm: bytes) -> list[bytes]:
        """Packets for the whole frames `pcm` (48 kHz mono s16) completes; the rest waits."""
        self._pending += self._resampler.convert(pcm, self._source_rate)
        return self._drain()

    def flush(self) -> list[bytes]:
        """The end of a talkspurt: what is left, padded with silence to a whole frame."""
        self._pending += self._resampler.flush()
        if len(self._pending) % self._frame_bytes:
            self._pending += bytes(self._frame_bytes - len(self._pending) % self._frame_bytes)
        return self._drain()

    def drop(self) -> None:
        """Forget what waits (an aborted reply)."""
        self._pending.clear()
        self._resampler.flush()

    def _drain(self) -> list[bytes]:
        packets: list[bytes] = []
        while len(self._pending) >= self._frame_bytes:
            chunk = np.frombuffer(bytes(self._pending[: self._frame_bytes]), dtype="<i2")
            del self._pending[: self._frame_bytes]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = self._pts
            self._pts += self.frame_samples
            packets.extend(bytes(p) for p in self._codec.encode(frame))
        return packets
