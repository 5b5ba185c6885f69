"""A reply's leading silence is not played (voice/turns.py `trim_lead`): it would be heard as delay."""

from __future__ import annotations

import numpy as np

from parley.voice.turns import LEAD_KEEP_SECS, trim_lead

RATE = 22050


def tone(secs: float, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(secs * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * 220 * t)


def pcm(*parts: np.ndarray) -> bytes:
    return np.concatenate(parts).astype("<i2").tobytes()


def test_the_silence_before_the_voice_goes_and_the_onset_stays() -> None:
    lead = np.random.default_rng(1).normal(0.0, 30.0, int(0.06 * RATE))  # Piper's near-silence
    voice = tone(0.5)
    trimmed = trim_lead(pcm(lead, voice), RATE)
    kept = len(trimmed) // 2 - len(voice)
    assert 0 < kept <= LEAD_KEEP_SECS * RATE + 1, kept
    assert trimmed.endswith(pcm(voice))


def test_audio_that_starts_with_the_voice_is_left_whole() -> None:
    audio = pcm(tone(0.3))
    assert trim_lead(audio, RATE) == audio


def test_silence_alone_is_nothing_to_play() -> None:
    assert trim_lead(pcm(np.zeros(2205)), RATE) == b""
    assert trim_lead(b"", RATE) == b""
