"""Voice activity detection: a per-frame speech model, and the streaming decision on top of it.

A `SpeechModel` only scores fixed-size frames of 16 kHz mono audio (Silero: 512 samples,
webrtcvad: 10/20/30 ms). `VADStream` (one per audio stream) turns those scores into
speech-start / speech-end events with a threshold, a start delay and a stop hangover, so every
model gets the same turn-taking behaviour.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

SAMPLE_RATE = 16000


@dataclass(slots=True, frozen=True)
class VADEvent:
    kind: Literal["speech_start", "speech_end"]
    #: seconds from the start of the stream to where the speech started / ended
    at: float


class SpeechModel(ABC):
    """Scores frames; holds recurrent state, so use one instance per stream (see `fresh`)."""

    name: str = "vad"
    #: samples per frame at 16 kHz
    frame_samples: int = 512

    @abstractmethod
    def probability(self, frame: bytes) -> float:
        """Speech probability of one frame of `frame_samples` s16le samples (CPU work: keep it short)."""

    @abstractmethod
    def fresh(self) -> SpeechModel:
        """A model with clean state for a new stream (sharing any loaded weights)."""

    def reset(self) -> None:
        """Forget recurrent state (a new utterance after a long pause)."""
