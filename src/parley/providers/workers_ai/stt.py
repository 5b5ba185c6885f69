"""Speech-to-text on Workers AI Whisper.

The Whisper models take different inputs: `@cf/openai/whisper` (and `whisper-tiny-en`) read the
raw audio bytes as the request body, while `@cf/openai/whisper-large-v3-turbo` reads JSON with the
audio in base64 and defaults to English unless `language` is passed.
"""

from __future__ import annotations

import base64
from typing import Any

from parley.errors import ProviderError
from parley.providers.stt import AudioInput, STTProvider, Transcript
from parley.providers.workers_ai.client import WorkersAIClient

DEFAULT_STT_MODEL = "@cf/openai/whisper"
TURBO_MODEL = "@cf/openai/whisper-large-v3-turbo"
MODEL_SETTING = "PARLEY_STT_MODEL"

# Models whose input is `{"audio": <base64>, ...}`; every other model gets the raw bytes.
_JSON_INPUT_MODELS = frozenset({TURBO_MODEL})


class WorkersAISTT(STTProvider):
    """Transcribes a whole recording with a Workers AI Whisper model. Owns `client`."""

    name = "workers-ai"

    def __init__(self, client: WorkersAIClient, *, model: str = DEFAULT_STT_MODEL) -> None:
        self.client = client
        self.model = model

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        if self.model in _JSON_INPUT_MODELS:
            body: dict[str, Any] = {
                "audio": base64.b64encode(audio.data).decode("ascii"),
                "task": "transcribe",
            }
            if language:
                body["language"] = language
            result = await self.client.run(self.model, model_setting=MODEL_SETTING, json=body)
        else:
            # The raw-bytes models take no language: they always detect it.
            result = await self.client.run(
                self.model,
                model_setting=MODEL_SETTING,
                content=audio.data,
                content_type="application/octet-stream",
            )
        return _transcript(result, self.model)

    async def aclose(self) -> None:
        await self.client.aclose()


def _transcript(result: dict[str, Any], model: str) -> Transcript:
    text = result.get("text")
    if not isinstance(text, str):
        raise ProviderError(f"Workers AI answered {model} without a transcript")
    info = result.get("transcription_info")
    language: str | None = None
    duration: float | None = None
    if isinstance(info, dict):
        if isinstance(info.get("language"), str):
            language = info["language"]
        if isinstance(info.get("duration"), int | float):
            duration = float(info["duration"])
    if duration is None:
        words = result.get("words")
        if isinstance(words, list) and words and isinstance(words[-1], dict):
            end = words[-1].get("end")
            duration = float(end) if isinstance(end, int | float) else None
    return Transcript(text=text.strip(), language=language, duration=duration)
