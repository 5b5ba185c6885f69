"""Real audio for the text-to-speech stand-ins: a tone whose length follows the text.

A stand-in that answered with arbitrary bytes would let a provider's decoding go untested; this
one encodes a real signal in the format the request asked for, so the provider must parse a
WAV stream, decode an MP3 or handle raw PCM exactly as it would with the real service. Tests
check the length: `SECONDS_PER_CHAR` seconds per character, at least `MIN_SECONDS`.
"""

from __future__ import annotations

from typing import cast

from parley.audio.encode import Format, encode, encode_wav

SECONDS_PER_CHAR = 0.05
MIN_SECONDS = 0.3
MAX_SECONDS = 60.0


def speech_seconds(text: str) -> float:
    """How long the stand-ins' "speech" for `text` lasts."""
    return min(MAX_SECONDS, max(MIN_SECONDS, len(text) * SECONDS_PER_CHAR))


def tone_pcm(text: str, sample_rate: int) -> bytes:
    """Mono s16le: one tone per word (pitch from the word), faded at the edges to avoid clicks."""
    import numpy as np

    words = text.split() or [text]
    total = int(speech_seconds(text) * sample_rate)
    per_word = max(1, total // len(words))
    index = np.arange(total)
    word_of = np.minimum(index // per_word, len(words) - 1)
    pitches = np.array([140.0 + (sum(map(ord, w)) % 12) * 15.0 for w in words])
    position = index - word_of * per_word
    fade = np.minimum(1.0, np.minimum(position, per_word - position) / (0.01 * sample_rate))
    wave = 9000 * fade * np.sin(2 * np.pi * pitches[word_of] * index / sample_rate)
    return bytes(wave.astype("<i2").tobytes())


def speech_audio(text: str, fmt: str, sample_rate: int = 24000) -> bytes:
    """The tone for `text` as `fmt`: `pcm` (raw s16le), `wav`, `mp3`, `ogg` (opus), `flac` or `m4a`."""
    pcm = tone_pcm(text, sample_rate)
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return encode_wav(pcm, sample_rate)
    if fmt in ("mp3", "ogg", "flac", "m4a", "webm"):
        return encode(pcm, sample_rate, cast(Format, fmt))
    raise ValueError(f"the stand-in cannot speak {fmt!r}")


def streamed_wav(wav: bytes) -> bytes:
    """`wav` with the placeholder sizes a streaming server writes (it cannot know them ahead)."""
    return wav[:4] + b"\xff\xff\xff\xff" + wav[8:40] + b"\xff\xff\xff\xff" + wav[44:]
