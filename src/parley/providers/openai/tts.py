"""Text-to-speech through `/audio/speech` of an OpenAI-compatible server.

OpenAI, Kokoro-FastAPI, LocalAI and openedai-speech serve this endpoint. Parley asks for `wav`
(self-describing, so a server with another sample rate still plays right) or `pcm` (headerless
24 kHz s16le, as OpenAI documents), and streams either as it downloads. OpenAI's voices speak
whatever language the text is in, so `language` is not sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from parley.audio.decode import decode_stream
from parley.audio.pcm import SAMPLE_WIDTH
from parley.errors import InvalidInput, ProviderError
from parley.providers.openai.client import OpenAIClient
from parley.providers.tts import AudioChunk, TTSProvider

DEFAULT_TTS_MODEL = "tts-1"
DEFAULT_TTS_VOICE = "alloy"
MODEL_SETTING = "PARLEY_TTS_MODEL"
PCM_RATE = 24000  # what OpenAI documents for response_format=pcm
ResponseFormat = Literal["wav", "pcm"]
_MAX_AUDIO_BYTES = 64 * 1024 * 1024
_MAX_AUDIO_SECONDS = 1800.0


class OpenAITTS(TTSProvider):
    """Streams speech from `/audio/speech`. Owns `client`.

    `response_format="pcm"` assumes 24 kHz; use `"wav"` (the default) for servers that speak at
    another rate. `speed` (0.25-4.0) is sent only when given.
    """

    name = "openai"

    def __init__(
        self,
        client: OpenAIClient,
        *,
        model: str = DEFAULT_TTS_MODEL,
        voice: str = DEFAULT_TTS_VOICE,
        response_format: ResponseFormat = "wav",
        speed: float | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.voice = voice
        self.response_format = response_format
        self.speed = speed

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": voice or self.voice,
            "response_format": self.response_format,
        }
        if self.speed is not None:
            body["speed"] = self.speed
        async with self.client.stream(
            "/audio/speech", model=self.model, model_setting=MODEL_SETTING, json=body
        ) as resp:
            if self.response_format == "pcm":
                odd = b""
                async for piece in resp.aiter_bytes():
                    data = odd + piece
                    cut = len(data) - len(data) % SAMPLE_WIDTH
                    odd = data[cut:]
                    if cut:
                        yield AudioChunk(data[:cut], PCM_RATE)
                return
            try:
                async for pcm, rate in decode_stream(
                    resp.aiter_bytes(),
                    sample_rate=PCM_RATE,
                    max_seconds=_MAX_AUDIO_SECONDS,
                    max_bytes=_MAX_AUDIO_BYTES,
                ):
                    yield AudioChunk(pcm, rate)
            except InvalidInput as exc:
                raise ProviderError(f"{self.client.where} sent unusable speech audio: {exc.message}") from exc

    async def aclose(self) -> None:
        await self.client.aclose()
