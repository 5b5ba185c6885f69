"""The encoder writes files that FFmpeg (through PyAV) reads back as the same sound."""

from __future__ import annotations

import io
import wave

import av
import pytest

from parley.audio.decode import decode
from parley.audio.encode import CONTENT_TYPE, encode, encode_async, encode_wav
from parley.audio.pcm import resample, split
from tests.audio import peak_frequency, tone

# format -> (FFmpeg's name for the container it must be, the codec inside)
EXPECTED = {
    "mp3": ("mp3", "mp3"),
    "ogg": ("ogg", "opus"),
    "webm": ("matroska,webm", "opus"),
    "m4a": ("mov,mp4,m4a,3gp,3g2,mj2", "aac"),
    "flac": ("flac", "flac"),
}


@pytest.mark.parametrize("rate", [16000, 22050, 24000])
@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_compressed_formats_hold_the_same_sound(fmt: str, rate: int) -> None:
    pcm = tone(1.0, rate, freq=500).tobytes()
    data = encode(pcm, rate, fmt)  # type: ignore[arg-type]
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name == EXPECTED[fmt][0]
        assert EXPECTED[fmt][1] in container.streams.audio[0].codec_context.name
    back = decode(data)
    assert len(back) / 2 / 16000 == pytest.approx(1.0, abs=0.07)
    assert peak_frequency(back, 16000) == pytest.approx(500, abs=3)


def test_wav_is_exact_and_readable_by_the_standard_library() -> None:
    pcm = tone(0.5, 22050).tobytes() + b"\x01"  # a stray half sample is dropped, not written
    data = encode(pcm, 22050, "wav")
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 22050)
        assert wav.readframes(wav.getnframes()) == pcm[:-1]
    assert encode_wav(pcm, 22050) == data


async def test_encode_async_and_content_types() -> None:
    data = await encode_async(tone(0.3, 16000).tobytes(), 16000, "ogg")
    assert data.startswith(b"OggS")
    assert CONTENT_TYPE["wav"] == "audio/wav"
    assert CONTENT_TYPE["mp3"] == "audio/mpeg"
    assert CONTENT_TYPE["ogg"].startswith("audio/ogg")


def test_unknown_format_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown audio format"):
        encode(b"\x00\x00", 16000, "aiff")  # type: ignore[arg-type]


def test_resample_keeps_length_and_pitch() -> None:
    pcm = tone(1.0, 22050, freq=300).tobytes()
    out = resample(pcm, 22050, 16000)
    assert len(out) / 2 / 16000 == pytest.approx(1.0, abs=0.01)
    assert peak_frequency(out, 16000) == pytest.approx(300, abs=3)
    assert resample(pcm, 16000, 16000) is pcm


def test_split_cuts_on_sample_boundaries() -> None:
    pieces = list(split(bytes(range(256)) * 10, 1000, 0.1))
    assert all(len(p) % 2 == 0 for p in pieces)
    assert b"".join(pieces) == bytes(range(256)) * 10
