"""Mono s16le PCM -> a file a browser or player understands: wav, mp3, ogg/opus (and webm, m4a, flac).

WAV is written with the standard library (no PyAV needed, the common case for `/api/speak`);
the compressed formats go through PyAV's bundled encoders. Opus only accepts 8, 12, 16, 24 or
48 kHz, so other rates (espeak-ng's 22,050 Hz) are resampled to 48 kHz first.
"""

from __future__ import annotations

import asyncio
import io
import wave
from dataclasses import dataclass
from typing import Literal

from parley.audio.pcm import SAMPLE_WIDTH, resample

Format = Literal["wav", "mp3", "ogg", "webm", "m4a", "flac"]

#: format -> Content-Type of the bytes `encode` returns
CONTENT_TYPE: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg; codecs=opus",
    "webm": "audio/webm; codecs=opus",
    "m4a": "audio/mp4",
    "flac": "audio/flac",
}

_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass(frozen=True, slots=True)
class _Codec:
    muxer: str
    codec: str
    rates: tuple[int, ...] | None  # None: any rate
    bit_rate: int | None = None


_CODECS: dict[str, _Codec] = {
    "mp3": _Codec("mp3", "libmp3lame", _MP3_RATES, 64_000),
    "ogg": _Codec("ogg", "libopus", _OPUS_RATES, 64_000),
    "webm": _Codec("webm", "libopus", _OPUS_RATES, 64_000),
    "m4a": _Codec("ipod", "aac", None, 64_000),
    "flac": _Codec("flac", "flac", None),
}


def encode(pcm: bytes, sample_rate: int, fmt: Format = "wav") -> bytes:
    """The whole of `pcm` as one file in `fmt`. CPU work: from async code use `encode_async`."""
    if fmt == "wav":
        return encode_wav(pcm, sample_rate)
    spec = _CODECS.get(fmt)
    if spec is None:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(CONTENT_TYPE)}")
    return _encode_av(pcm, sample_rate, spec)


async def encode_async(pcm: bytes, sample_rate: int, fmt: Format = "wav") -> bytes:
    """`encode` in a worker thread (mp3 and opus encode at roughly 100x real time, not free)."""
    return await asyncio.to_thread(encode, pcm, sample_rate, fmt)


def encode_wav(pcm: bytes, sample_rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH])
    return out.getvalue()


def _encode_av(pcm: bytes, sample_rate: int, spec: _Codec) -> bytes:
    import av
    import numpy as np

    rate = sample_rate
    if spec.rates is not None and rate not in spec.rates:
        rate = 48000
        pcm = resample(pcm, sample_rate, rate)
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH], dtype="<i2")
    out = io.BytesIO()
    with av.open(out, mode="w", format=spec.muxer) as container:
        stream = container.add_stream(spec.codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        if spec.bit_rate is not None:
            stream.bit_rate = spec.bit_rate
        # One-second frames; PyAV re-blocks them into the encoder's frame size.
        step = rate
        pts = 0
        for start in range(0, len(samples), step):
            block = samples[start : start + step].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = pts
            pts += block.shape[1]
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()
