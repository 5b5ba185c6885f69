"""The bridge's audio conversion with real codecs: 48 kHz WebRTC -> 16 kHz 60 ms Opus, and back.

Uplink: what the rtc peer pushes (its 48 -> 16 kHz downsampler) goes through the bridge's own
encoder; the packets are read back with an independent PyAV decoder (tests/xiaozhi/device.py).
Downlink: a server's 24 kHz 60 ms packets (Parley's XiaoZhi encoder) through the bridge's decoder
into the call's Playout, which the WebRTC track reads 20 ms at a time.
"""

from __future__ import annotations

import fractions
import json
from pathlib import Path

import av
import numpy as np
import pytest

from parley.rtc.tracks import Downsampler
from parley.voice.playout import FRAME_SAMPLES, Playout
from parley.xiaozhi.bridge import downlink_decoder, uplink_encoder
from parley.xiaozhi.identity import Identities
from parley.xiaozhi.opus import OpusDecoder, OpusEncoder
from parley.xiaozhi.upstream import read_message
from tests.xiaozhi.device import Decoder

TONE_HZ = 440.0


def tone(rate: int, seconds: float, hz: float = TONE_HZ) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")


def peak_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def webrtc_frames(samples: np.ndarray, rate: int = 48000, size: int = 960) -> list[av.AudioFrame]:
    """20 ms frames as aiortc delivers a browser's microphone."""
    frames = []
    for i in range(0, len(samples) - size + 1, size):
        frame = av.AudioFrame.from_ndarray(samples[i : i + size].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = i
        frame.time_base = fractions.Fraction(1, rate)
        frames.append(frame)
    return frames


def bandwidth_of(packet: bytes) -> str:
    """The audio bandwidth an Opus packet's TOC byte declares (RFC 6716, 3.1)."""
    config = packet[0] >> 3
    if config < 12:
        return ("narrow", "medium", "wide")[config // 4]
    if config < 16:
        return ("superwide", "full")[(config - 12) // 2]
    return ("narrow", "wide", "superwide", "full")[(config - 16) // 4]


def test_webrtc_audio_goes_up_as_16_khz_opus_in_exact_60_ms_packets() -> None:
    seconds = 1.2
    downsampler = Downsampler()
    pcm16 = b"".join(downsampler.convert(f) for f in webrtc_frames(tone(48000, seconds)))
    encoder = uplink_encoder()
    packets: list[bytes] = []
    for offset in range(0, len(pcm16), 640):  # pushed a 20 ms frame at a time, as the peer does
        packets += encoder.encode(pcm16[offset : offset + 640])
    whole = len(pcm16) // 2 // 960
    assert len(packets) == whole >= 19
    decoder = Decoder()  # decodes at 48 kHz: 60 ms is 2880 samples
    assert {decoder.samples(p) for p in packets} == {2880}
    # encoded from 16 kHz audio: the packets say wideband at most
    assert {bandwidth_of(p) for p in packets} <= {"narrow", "medium", "wide"}
    back = b"".join(OpusDecoder(16000).decode(p) for p in packets)
    assert abs(peak_hz(back[3200:], 16000) - TONE_HZ) < 10


@pytest.mark.parametrize("server_rate", [16000, 24000])
def test_the_servers_60_ms_packets_play_as_20_ms_frames_at_48_khz(server_rate: int) -> None:
    server = OpusEncoder(server_rate)  # Parley's XiaoZhi server: 48 kHz playout -> packets at its rate
    packets = server.encode(tone(48000, 0.9).tobytes()) + server.flush()
    assert len(packets) == 15
    decoder = downlink_decoder()
    playout = Playout()
    segment = playout.begin("a tone")
    for packet in packets:
        playout.write(segment, decoder.decode(packet))
    playout.end(segment)
    frames = []
    while (frame := playout.read_frame()) is not None:
        frames.append(frame)
    assert len(frames) == 3 * len(packets)  # each 60 ms packet is three 20 ms frames
    assert {len(f) for f in frames} == {FRAME_SAMPLES * 2}
    pcm = b"".join(frames)
    assert abs(peak_hz(pcm[9600:], 48000) - TONE_HZ) < 10
    assert playout.heard() == "a tone"


def test_identities_are_kept_and_a_call_takes_the_lowest_free_one(tmp_path: Path) -> None:
    path = tmp_path / "xiaozhi-bridge.json"
    pool = Identities(path)
    first, second = pool.take(), pool.take()
    assert first != second and first.device_id.startswith("02:")
    pool.give_back(first)
    assert pool.take() == first  # a single call at a time always shows the same device
    again = Identities(path)  # after a restart
    assert [again.take(), again.take()] == [first, second]
    assert json.loads(path.read_text())["identities"][0]["device_id"] == first.device_id
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_server_messages_are_read_and_an_emotion_is_not_reply_text() -> None:
    assert read_message('{"type":"stt","text":" hello "}') is not None
    emotion = read_message('{"type":"llm","emotion":"happy","text":"😀"}')
    assert emotion is not None and not hasattr(emotion, "text")
    assert read_message('{"type":"mcp","payload":{}}') is None
    assert read_message("not json") is None
