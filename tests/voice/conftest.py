"""The clip both VAD test modules score: espeak-ng sentences at known places, with faint noise.

The speech is trimmed to its first and last non-zero sample, so the true boundaries are known to
the sample, and separated by known silences, with faint noise over all of it: espeak writes exact
digital silence, which no microphone does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from parley.providers.vad import SAMPLE_RATE
from tests.audio import espeak_voiced

SENTENCES = (
    "The weather is nice today.",
    "Yes.",
    "Please turn on the kitchen lights.",
    "What time does the train leave?",
)
GAPS = (1.0, 1.2, 0.6, 1.2, 1.0)  # before each sentence, and after the last
NOISE = 0.003 * 32767


@dataclass(frozen=True)
class Clip:
    pcm: bytes
    segments: list[tuple[float, float]]  # (start, end) of each sentence, in seconds


def speak(text: str) -> np.ndarray:
    return espeak_voiced(text, SAMPLE_RATE)


@pytest.fixture(scope="session")
def clip() -> Clip:
    parts: list[np.ndarray] = []
    segments = []
    at = 0
    for gap, text in zip(GAPS, SENTENCES, strict=False):
        parts.append(np.zeros(int(gap * SAMPLE_RATE), dtype=np.int16))
        at += len(parts[-1])
        speech = speak(text)
        segments.append((at / SAMPLE_RATE, (at + len(speech)) / SAMPLE_RATE))
        parts.append(speech)
        at += len(speech)
    parts.append(np.zeros(int(GAPS[-1] * SAMPLE_RATE), dtype=np.int16))
    audio = np.concatenate(parts).astype(np.float64)
    audio += np.random.default_rng(7).normal(0.0, NOISE, len(audio))
    return Clip(np.clip(audio, -32768, 32767).astype("<i2").tobytes(), segments)
