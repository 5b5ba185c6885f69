"""The speech-to-text capability: a provider turns a recording into text."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class AudioInput:
    """A whole recording as uploaded: its bytes and what the client said it is."""

    data: bytes
    content_type: str = "application/octet-stream"
    filename: str = "audio"


@dataclass(slots=True, frozen=True)
class Transcript:
    text: str
    language: str | None = None
    duration: float | None = None


class STTProvider(ABC):
    name: str = "stt"
    model: str = ""

    @abstractmethod
    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        """Return the text spoken in `audio`; `language` None means detect it (or the model's default)."""

    async def aclose(self) -> None:
        """Release connections; a no-op unless the provider holds some."""

    async def warm_up(self) -> None:
        """Load the model ahead of the first request (`parley serve` calls it in the background);
        a no-op for providers that load nothing."""
