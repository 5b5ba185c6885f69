"""Raw PCM helpers: the one sample format Parley passes around, and WAV read as it streams in.

Everything inside Parley is signed 16-bit little-endian mono PCM (`bytes`), the format
`AudioChunk` carries and pocketsphinx reads. Bytes rather than numpy arrays keep numpy out of
every caller that only forwards audio.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

SAMPLE_WIDTH = 2  # bytes per s16 sample
STT_RATE = 16000

# A streamed WAV (espeak-ng writing to a pipe, an HTTP body of unknown length) carries a
# placeholder size in its RIFF and data headers, usually 0x7FFFF000 or 0xFFFFFFFF.
_MAX_HEADER = 4096


def duration(pcm: bytes, sample_rate: int) -> float:
    """Seconds of mono s16 audio in `pcm`."""
    return len(pcm) / SAMPLE_WIDTH / sample_rate


def split(pcm: bytes, sample_rate: int, seconds: float = 0.5) -> Iterator[bytes]:
    """`pcm` in pieces of about `seconds`, cut on sample boundaries."""
    step = max(SAMPLE_WIDTH, int(sample_rate * seconds) * SAMPLE_WIDTH)
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step]


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Mono s16 `pcm` at `to_rate`, through FFmpeg's resampler (PyAV)."""
    if from_rate == to_rate or not pcm:
        return pcm
    import av
    import numpy as np

    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH], dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = from_rate
    out = bytearray()
    for piece in (*resampler.resample(frame), *resampler.resample(None)):
        out += bytes(piece.planes[0])[: piece.samples * SAMPLE_WIDTH]
    return bytes(out)


class WavStream:
    """Turns a WAV byte stream into PCM as it arrives, trusting the format chunk, not the sizes.

    `feed()` returns the PCM that became available; `sample_rate` is set once the header has
    passed. Only mono 16-bit PCM is accepted (what espeak-ng, Deepgram `linear16` and OpenAI
    `wav` produce); anything else raises `ValueError` for the caller to translate.
    """

    def __init__(self) -> None:
        self.sample_rate: int | None = None
        self._rate: int | None = None  # from the format chunk, before the data chunk is reached
        self._head = bytearray()
        self._odd = b""  # a half sample held back so every chunk is whole samples

    def feed(self, data: bytes) -> bytes:
        if self.sample_rate is None:
            self._head += data
            body = self._parse_header()
            if body is None:
                return b""
            data = body
        data = self._odd + data
        cut = len(data) - len(data) % SAMPLE_WIDTH
        self._odd = data[cut:]
        return data[:cut]

    def _parse_header(self) -> bytes | None:
        """The bytes after the data chunk's header, or None while the header is incomplete."""
        head = bytes(self._head)
        if len(head) >= 12 and (head[:4] != b"RIFF" or head[8:12] != b"WAVE"):
            raise ValueError("not a WAV stream")
        pos = 12
        while pos + 8 <= len(head):
            chunk_id, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
            if chunk_id == b"data":
                if self._rate is None:
                    raise ValueError("WAV data chunk before its format chunk")
                self.sample_rate = self._rate
                return head[pos + 8 :]
            if pos + 8 + size > len(head):
                break
            if chunk_id == b"fmt ":
                tag, channels, rate = struct.unpack_from("<HHI", head, pos + 8)
                bits = struct.unpack_from("<H", head, pos + 22)[0]
                # 0xFFFE (extensible) wraps the same PCM samples.
                if tag not in (1, 0xFFFE) or channels != 1 or bits != 16:
                    raise ValueError(f"WAV is not mono 16-bit PCM (format {tag}, {channels} ch, {bits} bit)")
                self._rate = rate
            pos += 8 + size + size % 2
        if len(head) > _MAX_HEADER:
            raise ValueError("WAV header is too long or has no data chunk")
        return None

    def finish(self) -> None:
        """Raise if the stream ended before its audio started."""
        if self.sample_rate is None:
            raise ValueError("the WAV stream ended inside its header")
