"""The text-to-speech capability: a provider streams audio for a piece of text."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class AudioChunk:
    """Raw audio: signed 16-bit little-endian mono PCM at `sample_rate`."""

    pcm: bytes
    sample_rate: int
    #: the voice that spoke it, when the provider knows (it may differ from the one asked for)
    voice: str | None = None

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


class TTSProvider(ABC):
    name: str = "tts"
    voice: str = ""

    @abstractmethod
    def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        """Yield PCM as soon as it is made (the first chunk early: it is the latency users hear).

        `language` (BCP-47 such as `en`, `de`) picks a matching voice when `voice` is None.
        Cancelling the consuming task must stop synthesis.
        """

    async def aclose(self) -> None:
        """Release processes or connections; a no-op unless the provider holds some."""

    async def warm_up(self) -> None:
        """Load the model ahead of the first request (`parley serve` calls it in the background);
        a no-op for providers that load nothing."""
