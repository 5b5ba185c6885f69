"""The decoder on real files of every accepted format, made here with PyAV and sox, and on bad input."""

from __future__ import annotations

import io
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest

from parley.audio.decode import decode, decode_async, decode_stream, measure
from parley.audio.encode import encode_wav
from parley.audio.pcm import WavStream
from parley.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from parley.standins.speech import streamed_wav
from tests.audio import peak_frequency, tone
from tests.conftest import require_tool

SECONDS = 1.5

# (container, codec, sample rate, channels): what browsers and phones actually send.
PYAV_FILES = {
    "webm": ("webm", "libopus", 48000, 2),  # Chrome/Firefox MediaRecorder
    "ogg": ("ogg", "libopus", 48000, 1),  # Firefox, WhatsApp voice notes
    "m4a": ("ipod", "aac", 44100, 2),  # Safari MediaRecorder, iPhone voice memos
    "mp3": ("mp3", "libmp3lame", 44100, 1),
}


def pyav_file(kind: str, seconds: float = SECONDS) -> bytes:
    muxer, codec, rate, channels = PYAV_FILES[kind]
    layout = "stereo" if channels == 2 else "mono"
    samples = tone(seconds, rate, channels=channels)
    out = io.BytesIO()
    with av.open(out, mode="w", format=muxer) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        # Packed s16 frames are (1, samples * channels), interleaved.
        frame = av.AudioFrame.from_ndarray(samples.T.reshape(1, -1).copy(), format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def sox_file(kind: str, tmp_path: Path, seconds: float = SECONDS) -> bytes:
    sox = require_tool("sox", "an encoder independent of FFmpeg for wav and flac")
    path = tmp_path / f"tone.{kind}"
    # 44.1 kHz stereo 16-bit: the CD format most desktop recorders write.
    subprocess.run(
        [
            sox,
            "-n",
            "-r",
            "44100",
            "-c",
            "2",
            "-b",
            "16",
            str(path),
            "synth",
            str(seconds),
            "sine",
            "440",
            "vol",
            "0.3",
        ],
        check=True,
    )
    return path.read_bytes()


def make(kind: str, tmp_path: Path) -> bytes:
    return sox_file(kind, tmp_path) if kind in ("wav", "flac") else pyav_file(kind)


ALL_KINDS = ["webm", "ogg", "m4a", "mp3", "wav", "flac"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_format_decodes_to_16k_mono_of_the_right_length(kind: str, tmp_path: Path) -> None:
    pcm = decode(make(kind, tmp_path))
    seconds = len(pcm) / 2 / 16000
    # AAC and MP3 add encoder padding (tens of milliseconds); the rest is exact.
    assert seconds == pytest.approx(SECONDS, abs=0.06), kind
    assert peak_frequency(pcm, 16000) == pytest.approx(440, abs=3)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_file_cut_inside_its_header_is_a_clear_415(kind: str, tmp_path: Path) -> None:
    data = make(kind, tmp_path)
    with pytest.raises(UnsupportedMediaType) as caught:
        decode(data[:40])
    assert caught.value.field == "audio"
    assert "Traceback" not in caught.value.message


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_file_cut_in_the_middle_keeps_the_audio_before_the_cut_or_fails_clearly(
    kind: str, tmp_path: Path
) -> None:
    data = make(kind, tmp_path)
    try:
        pcm = decode(data[: len(data) // 2])
    except UnsupportedMediaType as exc:  # some containers need their tail (mp4's index may be last)
        assert exc.field == "audio"
    else:
        assert 0 < len(pcm) / 2 / 16000 < SECONDS


@pytest.mark.parametrize(
    "data",
    [
        b"this is not audio at all" * 20,
        bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8)),
        b"OggS" + b"\x00" * 500,  # right magic, nothing behind it
        b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + b"\x01" * 300,
        b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x55" * 500,
        b"\x00\x00\x00\x18ftypisom" + b"\x07" * 500,
        b"\x1a\x45\xdf\xa3" + b"\xff" * 500,
    ],
    ids=["text", "random", "ogg-magic", "wav-magic", "mp3-magic", "mp4-magic", "webm-magic"],
)
def test_garbage_is_a_clear_415_naming_the_field(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        decode(data)
    body = caught.value.to_dict()
    assert body["status"] == 415 and body["field"] == "audio"
    assert "webm/opus" in body["limit"]


def test_empty_audio_is_a_400() -> None:
    with pytest.raises(InvalidInput, match="audio is empty"):
        decode(b"")


TOO_LONG = {
    "error": "audio is longer than 2 seconds",
    "code": "payload_too_large",
    "status": 413,
    "field": "audio",
    "limit": 2.0,
}


def test_too_long_names_the_limit_in_seconds(tmp_path: Path) -> None:
    data = pyav_file("ogg", seconds=3.0)
    with pytest.raises(PayloadTooLarge) as caught:
        decode(data, max_seconds=2.0)
    assert caught.value.to_dict() == TOO_LONG


@pytest.mark.parametrize("fmt", ["webm", "ogg", "m4a", "mp3", "wav"])
def test_measure_counts_the_seconds_and_refuses_past_the_limit(fmt: str) -> None:
    data = encode_wav(tone(3.0, 16000)[0].tobytes(), 16000) if fmt == "wav" else pyav_file(fmt, seconds=3.0)
    assert measure(data, max_seconds=5.0) == pytest.approx(3.0, abs=0.1)
    with pytest.raises(PayloadTooLarge) as caught:
        measure(data, max_seconds=2.0)
    assert caught.value.to_dict() == TOO_LONG


def test_measure_refuses_what_is_not_audio_as_decode_does() -> None:
    with pytest.raises(UnsupportedMediaType):
        measure(b"OggS" + b"\x00" * 200, max_seconds=5.0)


def test_too_large_names_the_limit_in_bytes(tmp_path: Path) -> None:
    data = sox_file("wav", tmp_path)
    with pytest.raises(PayloadTooLarge) as caught:
        decode(data, max_bytes=10_000)
    assert caught.value.limit == 10_000 and caught.value.field == "audio"


async def test_decode_async_gives_the_same_samples_at_another_rate(tmp_path: Path) -> None:
    data = pyav_file("webm")
    pcm = await decode_async(data, sample_rate=24000)
    assert len(pcm) / 2 / 24000 == pytest.approx(SECONDS, abs=0.03)


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_streamed_wav_passes_through_as_it_arrives(tmp_path: Path) -> None:
    rate = 22050
    pcm = tone(1.0, rate).tobytes()
    wav = streamed_wav(encode_wav(pcm, rate))  # placeholder sizes, as a live stream carries
    pieces = [piece async for piece in decode_stream(_pieces(wav, 7), sample_rate=16000)]
    assert len(pieces) > 100  # one per network piece, not one at the end
    assert {rate_ for _, rate_ in pieces} == {rate}
    assert b"".join(p for p, _ in pieces) == pcm


async def test_a_streamed_mp3_is_decoded_whole() -> None:
    pieces = [piece async for piece in decode_stream(_pieces(pyav_file("mp3"), 500), sample_rate=16000)]
    assert len(pieces) == 1 and pieces[0][1] == 16000
    assert len(pieces[0][0]) / 2 / 16000 == pytest.approx(SECONDS, abs=0.06)


def test_wav_stream_skips_extra_chunks_and_refuses_stereo(tmp_path: Path) -> None:
    stereo = sox_file("wav", tmp_path)
    with pytest.raises(ValueError, match="not mono 16-bit"):
        WavStream().feed(stereo)
    fmt = b"fmt " + (16).to_bytes(4, "little") + bytes.fromhex("0100 0100 803e0000 007d0000 0200 1000")
    listing = b"LIST" + (5).to_bytes(4, "little") + b"hello\x00"  # odd size: padded to even
    wav = b"RIFF\xff\xff\xff\xffWAVE" + listing + fmt + b"data\xff\xff\xff\xff" + b"\x01\x02\x03"
    stream = WavStream()
    assert stream.feed(wav) == b"\x01\x02"  # the odd byte waits for its pair
    assert stream.sample_rate == 16000
    assert stream.feed(b"\x04") == b"\x03\x04"
