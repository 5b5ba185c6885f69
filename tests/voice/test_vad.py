"""Silero and webrtcvad find the sentences of a generated clip (`conftest.clip`) where we put them."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.errors import ConfigError
from parley.providers.silero import SileroVAD
from parley.providers.silero import check as silero_check
from parley.providers.vad import SAMPLE_RATE, SpeechModel, VADEvent
from parley.providers.webrtcvad import WebRTCVAD
from parley.providers.webrtcvad import check as webrtcvad_check
from parley.voice.vad_stream import VADStream
from tests.conftest import make_settings
from tests.voice.conftest import Clip

# Silero's edges land 15-60 ms after the true ones (its probability lags the audio by a frame or
# two); webrtcvad's are coarser (30 ms frames, and it hears espeak's quiet final consonants).
SILERO_TOLERANCE = 0.08
WEBRTC_TOLERANCE = 0.15
# How far past the nominal hangover Silero's end decision may land (pipecat: ~68 ms).
SILERO_DECISION_SLACK = 0.08


def _run(stream: VADStream, pcm: bytes, chunk: int = 640) -> tuple[list[VADEvent], list[float]]:
    """Feed 20 ms packets as a WebRTC track would; also return where each event was decided."""
    events: list[VADEvent] = []
    decided: list[float] = []
    for offset in range(0, len(pcm), chunk):
        for event in stream.feed(pcm[offset : offset + chunk]):
            events.append(event)
            decided.append(stream.received)
    events += stream.flush()
    return events, decided


def _segments(events: list[VADEvent]) -> list[tuple[float, float]]:
    kinds = [event.kind for event in events]
    assert kinds == ["speech_start", "speech_end"] * (len(events) // 2), kinds
    return [(events[i].at, events[i + 1].at) for i in range(0, len(events), 2)]


def _assert_close(
    found: list[tuple[float, float]], truth: list[tuple[float, float]], tolerance: float
) -> None:
    assert len(found) == len(truth), (found, truth)
    for (start, end), (true_start, true_end) in zip(found, truth, strict=True):
        assert abs(start - true_start) <= tolerance, (found, truth)
        assert abs(end - true_end) <= tolerance, (found, truth)


def test_both_vads_are_usable_here(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert silero_check(settings).usable
    assert webrtcvad_check(settings).usable


def test_silero_finds_every_sentence_and_decides_soon_after_the_hangover(clip: Clip) -> None:
    stream = VADStream(SileroVAD(), threshold=0.5, start_secs=0.2, stop_secs=0.2)
    events, decided = _run(stream, clip.pcm)
    _assert_close(_segments(events), clip.segments, SILERO_TOLERANCE)
    hangover = 0.2
    ends = [when for event, when in zip(events, decided, strict=False) if event.kind == "speech_end"]
    for when, (_, true_end) in zip(ends, clip.segments, strict=True):
        # Below the hangover when the model already doubted a quiet final consonant.
        assert hangover - SILERO_TOLERANCE <= when - true_end <= hangover + SILERO_DECISION_SLACK


def test_webrtcvad_finds_every_sentence(clip: Clip) -> None:
    events, _ = _run(VADStream(WebRTCVAD(2), start_secs=0.2, stop_secs=0.2), clip.pcm)
    _assert_close(_segments(events), clip.segments, WEBRTC_TOLERANCE)


def test_a_longer_start_delay_ignores_a_short_word(clip: Clip) -> None:
    events, _ = _run(VADStream(SileroVAD(), start_secs=0.6, stop_secs=0.2), clip.pcm)
    without_yes = [segment for i, segment in enumerate(clip.segments) if i != 1]
    _assert_close(_segments(events), without_yes, 0.6 + SILERO_TOLERANCE)
    assert len(events) == 6


def test_a_hangover_longer_than_a_pause_joins_the_sentences_around_it(clip: Clip) -> None:
    # The pause before the third sentence is 0.6 s, the others 1 s and more.
    events, _ = _run(VADStream(WebRTCVAD(2), start_secs=0.2, stop_secs=0.8), clip.pcm)
    found = _segments(events)
    assert len(found) == 3
    assert abs(found[1][0] - clip.segments[1][0]) <= WEBRTC_TOLERANCE
    assert abs(found[1][1] - clip.segments[2][1]) <= WEBRTC_TOLERANCE


def test_a_higher_threshold_hears_less(clip: Clip) -> None:
    def speech_time(threshold: float) -> float:
        events, _ = _run(VADStream(SileroVAD(), threshold=threshold, start_secs=0.0, stop_secs=0.0), clip.pcm)
        return sum(end - start for start, end in _segments(events))

    assert speech_time(0.3) > speech_time(0.9)


class _Script(SpeechModel):
    """A frame model that reads its probabilities from a list: exact control over the decision."""

    frame_samples = 160  # 10 ms

    def __init__(self, probabilities: list[float], frame_samples: int = 160) -> None:
        self.probabilities = probabilities
        self.frame_samples = frame_samples
        self.index = 0

    def probability(self, frame: bytes) -> float:
        assert len(frame) == self.frame_samples * 2
        value = self.probabilities[self.index]
        self.index += 1
        return value

    def fresh(self) -> _Script:
        return _Script(self.probabilities, self.frame_samples)


def test_the_end_is_decided_at_the_packet_nearest_the_hangover_not_when_a_frame_fills() -> None:
    # Silero's 32 ms frames from 20 ms packets; speech ends at frame 10 (0.32 s). The quiet run
    # starts on a frame boundary, half a frame after the true edge on average: the hangover is
    # counted as 0.2 - 0.016 = 0.184 s of audio received (scored or not), to the nearest packet.
    stream = VADStream(_Script([0.9] * 10 + [0.0] * 20, 512), start_secs=0.064, stop_secs=0.2)
    assert stream.hangover_secs == pytest.approx(0.184)
    events, decided = _run(stream, bytes(30 * 1024), chunk=640)
    assert events == [VADEvent("speech_start", 0.0), VADEvent("speech_end", 0.32)]  # the edge is exact
    # 0.18 s after the edge (0.184 - 0.18 is under half a packet), with the sixth quiet frame
    # still filling; waiting for it to be whole would decide at 0.52 s, 0.2 s after the edge.
    assert decided[1] == pytest.approx(0.50)


def test_hysteresis_unsure_frames_neither_end_nor_extend_speech() -> None:
    # 0.4 is between the exit threshold (0.35) and the entry threshold (0.5).
    script = [0.0] * 5 + [0.9] * 5 + [0.4] * 3 + [0.1] * 2 + [0.9] * 5 + [0.1] * 5 + [0.0] * 3
    stream = VADStream(_Script(script), threshold=0.5, start_secs=0.03, stop_secs=0.03)
    events = stream.feed(bytes(len(script) * 320))
    # Speech starts at frame 5; the 0.4s and the two 0.1s do not end it (a 0.9 comes back before
    # three quiet frames); it ends at frame 20 where the last quiet run begins.
    assert events == [VADEvent("speech_start", 0.05), VADEvent("speech_end", 0.2)]


def test_chunking_does_not_change_the_events() -> None:
    script = [0.0] * 10 + [0.9] * 30 + [0.0] * 30
    whole = VADStream(_Script(script), start_secs=0.05, stop_secs=0.1).feed(bytes(len(script) * 320))
    stream = VADStream(_Script(script), start_secs=0.05, stop_secs=0.1)
    pcm = bytes(len(script) * 320)
    odd = [event for i in range(0, len(pcm), 333) for event in stream.feed(pcm[i : i + 333])]
    assert odd == whole == [VADEvent("speech_start", 0.1), VADEvent("speech_end", 0.4)]


def test_flush_closes_the_speech_the_stream_ended_in() -> None:
    stream = VADStream(_Script([0.9] * 20), start_secs=0.05, stop_secs=0.1)
    assert stream.feed(bytes(20 * 320 + 100)) == [VADEvent("speech_start", 0.0)]
    assert stream.flush() == [VADEvent("speech_end", 20 * 0.01 + 50 / SAMPLE_RATE)]
    assert not stream.speaking


async def test_feed_async_gives_what_feed_gives(clip: Clip) -> None:
    model = WebRTCVAD(3)
    expected, _ = _run(VADStream(model.fresh()), clip.pcm)
    for size in (640, 48000):  # small packets inline, big ones in a worker thread
        stream = VADStream(model.fresh())
        events = [
            e for i in range(0, len(clip.pcm), size) for e in await stream.feed_async(clip.pcm[i : i + size])
        ]
        assert events + stream.flush() == expected


def test_webrtcvad_rejects_an_aggressiveness_it_does_not_have() -> None:
    with pytest.raises(ConfigError, match="0, 1, 2 or 3"):
        WebRTCVAD(4)
