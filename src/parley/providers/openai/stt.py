"""Speech-to-text through `/audio/transcriptions` of an OpenAI-compatible server.

OpenAI, Groq, LocalAI and faster-whisper-server speak this multipart form; Ollama does not
serve audio, so with Ollama as the chat model speech needs PARLEY_STT_BASE_URL (or Workers AI).
"""

from __future__ import annotations

from parley.errors import ProviderError
from parley.providers.openai.client import OpenAIClient
from parley.providers.stt import AudioInput, STTProvider, Transcript

DEFAULT_STT_MODEL = "whisper-1"
MODEL_SETTING = "PARLEY_STT_MODEL"


class OpenAISTT(STTProvider):
    """Uploads the whole recording and returns the `text` of the JSON answer. Owns `client`."""

    name = "openai"

    def __init__(self, client: OpenAIClient, *, model: str = DEFAULT_STT_MODEL) -> None:
        self.client = client
        self.model = model

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        form = {"model": self.model, "response_format": "json"}
        if language:
            form["language"] = language
        body = await self.client.post(
            "/audio/transcriptions",
            model=self.model,
            model_setting=MODEL_SETTING,
            data=form,
            files={"file": (audio.filename, audio.data, audio.content_type)},
        )
        text = body.get("text")
        if not isinstance(text, str):
            raise ProviderError(f"{self.client.where} answered the transcription without a text")
        # The plain `json` format does not report the language, so only a requested one is known.
        return Transcript(text=text.strip(), language=language)

    async def aclose(self) -> None:
        await self.client.aclose()
