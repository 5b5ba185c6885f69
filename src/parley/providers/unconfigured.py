"""What runs when no model is configured: the server still starts, and a turn says how to fix it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from parley.errors import ProviderNotConfigured
from parley.providers.llm import ChatDelta, ChatProvider, ChatRequest
from parley.providers.stt import AudioInput, STTProvider, Transcript
from parley.providers.tts import AudioChunk, TTSProvider

CHAT_HINT = (
    "No chat model is configured. Set CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN for Workers AI, "
    "or PARLEY_LLM=openai with PARLEY_LLM_BASE_URL (and PARLEY_LLM_API_KEY) for an OpenAI-compatible "
    "server such as Ollama (http://127.0.0.1:11434/v1)."
)
STT_HINT = (
    "No speech-to-text model is configured. Set CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN for "
    "Workers AI Whisper, or PARLEY_STT=openai with PARLEY_STT_BASE_URL (or PARLEY_LLM_BASE_URL)."
)
TTS_HINT = (
    "No text-to-speech is configured. Install espeak-ng (apt-get install espeak-ng) for the offline "
    "voice, or set PARLEY_TTS=workers-ai (with Cloudflare credentials) or PARLEY_TTS=openai."
)


class UnconfiguredChat(ChatProvider):
    name = "none"

    def __init__(self, reason: str = CHAT_HINT) -> None:
        self.reason = reason

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        raise ProviderNotConfigured(self.reason, field="PARLEY_LLM")
        yield ChatDelta()  # pragma: no cover - makes this an async generator


class UnconfiguredSTT(STTProvider):
    name = "none"

    def __init__(self, reason: str = STT_HINT) -> None:
        self.reason = reason

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        raise ProviderNotConfigured(self.reason, field="PARLEY_STT")


class UnconfiguredTTS(TTSProvider):
    name = "none"

    def __init__(self, reason: str = TTS_HINT) -> None:
        self.reason = reason

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        raise ProviderNotConfigured(self.reason, field="PARLEY_TTS")
        yield AudioChunk(b"", 16000)  # pragma: no cover - makes this an async generator
