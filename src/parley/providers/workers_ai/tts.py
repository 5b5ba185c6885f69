"""Text-to-speech on Workers AI: Deepgram Aura (default) and MeloTTS.

The two models answer differently. Aura returns the audio itself in the encoding asked for;
Parley asks for 16-bit WAV so the speech streams to the caller as it downloads. MeloTTS returns
a JSON envelope with base64 MP3 in `result.audio` (some deployments send `audio/mpeg` directly),
which is decoded whole. Both end up as mono s16 PCM chunks.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any

from parley.audio.decode import decode_async, decode_stream
from parley.audio.pcm import split
from parley.errors import InvalidInput, ProviderError
from parley.providers.http import UpstreamResponse
from parley.providers.tts import AudioChunk, TTSProvider
from parley.providers.workers_ai.client import WorkersAIClient, map_error, upstream_error

AURA_MODEL = "@cf/deepgram/aura-1"
MELOTTS_MODEL = "@cf/myshell-ai/melotts"
DEFAULT_TTS_MODEL = AURA_MODEL
DEFAULT_AURA_VOICE = "angus"
MODEL_SETTING = "PARLEY_TTS_MODEL"
SAMPLE_RATE = 24000
#: BCP-47 language -> MeloTTS `lang` (it uses its own codes for Japanese and Korean)
MELOTTS_LANG = {"en": "en", "es": "es", "fr": "fr", "zh": "zh", "ja": "jp", "ko": "kr"}
_MAX_AUDIO_BYTES = 64 * 1024 * 1024
_MAX_AUDIO_SECONDS = 1800.0


class WorkersAITTS(TTSProvider):
    """Speaks with a Workers AI TTS model. Owns `client`.

    `voice` is Aura's speaker (`angus`, `asteria`, `luna`, `orion`, ...); MeloTTS has one voice
    per language and takes `language` instead (en, es, fr, zh, ja, ko). Aura speaks English.
    """

    name = "workers-ai"

    def __init__(
        self, client: WorkersAIClient, *, model: str = DEFAULT_TTS_MODEL, voice: str | None = None
    ) -> None:
        self.client = client
        self.model = model
        self.voice = voice or (DEFAULT_AURA_VOICE if model != MELOTTS_MODEL else "")

    def _body(self, text: str, voice: str | None, language: str | None) -> dict[str, Any]:
        if self.model == MELOTTS_MODEL:
            code = (language or "en").lower().replace("_", "-").split("-")[0]
            if code not in MELOTTS_LANG:
                raise InvalidInput(
                    f"MeloTTS speaks {', '.join(MELOTTS_LANG)}, not {language!r}",
                    field="language",
                    limit=", ".join(MELOTTS_LANG),
                )
            return {"prompt": text, "lang": MELOTTS_LANG[code]}
        return {
            "text": text,
            "speaker": voice or self.voice,
            "encoding": "linear16",
            "container": "wav",
            "sample_rate": SAMPLE_RATE,
        }

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        body = self._body(text, voice, language)
        async with self.client.stream(self.model, model_setting=MODEL_SETTING, json=body) as resp:
            if "json" in resp.headers.get("content-type", ""):
                pcm = await self._from_envelope(resp)
                for piece in split(pcm, SAMPLE_RATE):
                    yield AudioChunk(piece, SAMPLE_RATE)
                return
            try:
                async for pcm, rate in decode_stream(
                    resp.aiter_bytes(),
                    sample_rate=SAMPLE_RATE,
                    max_seconds=_MAX_AUDIO_SECONDS,
                    max_bytes=_MAX_AUDIO_BYTES,
                ):
                    yield AudioChunk(pcm, rate)
            except InvalidInput as exc:
                raise ProviderError(f"Workers AI {self.model} sent unusable audio: {exc.message}") from exc

    async def _from_envelope(self, resp: UpstreamResponse) -> bytes:
        """The PCM of a JSON answer (`result.audio` in base64), or the error it reports."""
        raw = await resp.aread()
        try:
            envelope = json.loads(raw)
        except ValueError as exc:
            raise ProviderError(f"Workers AI answered {self.model} with unreadable JSON") from exc
        result = envelope.get("result") if isinstance(envelope, dict) else None
        if not isinstance(result, dict) or envelope.get("success") is False:
            code, message = upstream_error(envelope)
            raise map_error(resp.status_code, code, message, model=self.model, model_setting=MODEL_SETTING)
        audio = result.get("audio")
        if not isinstance(audio, str):
            raise ProviderError(f"Workers AI answered {self.model} without audio")
        try:
            data = base64.b64decode(audio, validate=True)
            return await decode_async(
                data, sample_rate=SAMPLE_RATE, max_seconds=_MAX_AUDIO_SECONDS, max_bytes=_MAX_AUDIO_BYTES
            )
        except (binascii.Error, InvalidInput) as exc:
            raise ProviderError(f"Workers AI {self.model} sent unusable audio: {exc}") from exc

    async def aclose(self) -> None:
        await self.client.aclose()
