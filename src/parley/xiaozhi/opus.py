"""Opus for XiaoZhi devices, on PyAV's libopus (already installed for aiortc).

`OpusDecoder`: a device's uplink packets -> 16 kHz mono s16 PCM (what `VoiceCall.push` takes).
`OpusEncoder`: 48 kHz mono PCM from the playout -> packets of exactly `FRAME_MS` for the rate the
server hello announced; the rest of a talkspurt is padded with silence (`flush`), because a device
drops longer packets and pads shorter ones, which sounds choppy.
One of each per connection: both keep codec state between packets.

An Opus packet does not carry an input rate: any decoder plays it at its own rate. So the
encoder takes the playout's 48 kHz as it is and is only told the band the device can play
(`cutoff`, half its rate), instead of resampling to 24 kHz first, which libopus would undo
internally (it codes at 48 kHz): 10-15% less CPU per packet, and one filter fewer. FFmpeg's
libopus decoder always decodes at 48 kHz, so the uplink is resampled to 16 kHz after it.
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
#: the rates libopus takes its input at
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
#: the audio bands Opus codes (narrow, medium, wide, super-wide, full), in Hz
_BANDS = (4000, 6000, 8000, 12000, 20000)
#: what FFmpeg's libopus decoder puts out, whatever the stream
DECODED_RATE = 48000


def band_of(rate: int) -> int:
    """The widest Opus band a player at `rate` can reproduce (its Nyquist frequency or below)."""
    return max((band for band in _BANDS if band <= rate // 2), default=_BANDS[0])


class OpusDecoder:
    def __init__(self, rate: int = UPLINK_RATE) -> None:
        self.rate = rate
        self._codec: Any = av.CodecContext.create("libopus", "r")
        self._codec.sample_rate = DECODED_RATE
        self._codec.layout = "mono"
        self._resampler = (
            None if rate == DECODED_RATE else av.AudioResampler(format="s16", layout="mono", rate=rate)
        )

    def decode(self, packet: bytes) -> bytes:
        """PCM of one packet; InvalidInput (field `opus`) when it is not Opus."""
        if not packet:
            return b""
        try:
            frames = self._codec.decode(av.Packet(packet))
            out = bytearray()
            for frame in frames:
                pieces = [frame] if self._resampler is None else self._resampler.resample(frame)
                for piece in pieces:
                    out += bytes(piece.planes[0])[: piece.samples * SAMPLE_WIDTH]
        except (av.error.FFmpegError, ValueError) as exc:
            raise InvalidInput(f"binary frame is not an Opus packet ({exc})", field="opus") from exc
        return bytes(out)


class OpusEncoder:
    def __init__(self, rate: int = 24000, *, source_rate: int = 48000) -> None:
        #: the rate the device plays at (what the server hello announced)
        self.rate = rate
        # libopus takes the source as it is when it can (the playout's 48 kHz always).
        self._coded_rate = source_rate if source_rate in OPUS_RATES else rate
        self.frame_samples = self._coded_rate * FRAME_MS // 1000
        self._frame_bytes = self.frame_samples * SAMPLE_WIDTH
        self._source_rate = source_rate
        self._resampler = None if self._coded_rate == source_rate else Resampler(rate)
        self._pending = bytearray()
        self._pts = 0
        codec: Any = av.CodecContext.create("libopus", "w")
        codec.sample_rate = self._coded_rate
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = BIT_RATE
        codec.options = {
            "frame_duration": str(FRAME_MS),
            "application": "voip",
            # no band the device cannot play: the bits go where it can hear them
            "cutoff": str(band_of(min(rate, self._coded_rate))),
        }
        codec.open()
        self._codec = codec

    def encode(self, pcm: bytes) -> list[bytes]:
        """Packets for the whole frames `pcm` (48 kHz mono s16) completes; the rest waits."""
        if self._resampler is None:
            if not self._pending and len(pcm) == self._frame_bytes:
                return self._encode(pcm)  # the pump's usual case: one whole packet
            self._pending += pcm
        else:
            self._pending += self._resampler.convert(pcm, self._source_rate)
        return self._drain()

    def flush(self) -> list[bytes]:
        """The end of a talkspurt: what is left, padded with silence to a whole frame."""
        if self._resampler is not None:
            self._pending += self._resampler.flush()
        if len(self._pending) % self._frame_bytes:
            self._pending += bytes(self._frame_bytes - len(self._pending) % self._frame_bytes)
        return self._drain()

    def drop(self) -> None:
        """Forget what waits (an aborted reply)."""
        self._pending.clear()
        if self._resampler is not None:
            self._resampler.flush()

    def _drain(self) -> list[bytes]:
        packets: list[bytes] = []
        while len(self._pending) >= self._frame_bytes:
            chunk = bytes(self._pending[: self._frame_bytes])
            del self._pending[: self._frame_bytes]
            packets += self._encode(chunk)
        return packets

    def _encode(self, chunk: bytes) -> list[bytes]:
        samples = np.frombuffer(chunk, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self._coded_rate
        frame.pts = self._pts
        self._pts += self.frame_samples
        return [bytes(p) for p in self._codec.encode(frame)]
