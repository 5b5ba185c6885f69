"""POST /api/speak: text in, a playable audio file out (wav, mp3 or ogg/opus).

The whole reply is synthesised before the answer starts, so the file carries exact sizes (a
WAV header needs them, and `<audio>` seeks better with a Content-Length). Live calls do not
come here: they stream PCM from the TTS provider directly.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from parley.audio.encode import CONTENT_TYPE, encode_async
from parley.audio.pcm import duration, resample
from parley.errors import ProviderError
from parley.services import Services
from parley.web import schemas
from parley.web.body import read_json, require_text, transport_limit, validate
from parley.web.users import spend

router = APIRouter()

SpeakFormat = Literal["wav", "mp3", "ogg"]


class SpeakIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    text: str | None = Field(None, description="What to say (at most PARLEY_MAX_SPEAK_CHARS characters).")
    voice: str | None = Field(
        None, min_length=1, max_length=64, description="Voice name; unset uses PARLEY_TTS_VOICE."
    )
    format: SpeakFormat = Field("wav", description="wav, mp3 or ogg (Opus).")
    language: str | None = schemas.language_field(
        "Language code such as `en` or `de`; picks a voice when `voice` is unset."
    )


@router.post(
    "/api/speak",
    response_class=Response,
    responses={
        **schemas.ERRORS,
        200: {"content": {CONTENT_TYPE[f]: {} for f in ("wav", "mp3", "ogg")}},
    },
    openapi_extra=schemas.json_body(SpeakIn),
    summary="Speak a text: returns wav, mp3 or ogg/opus audio",
)
async def speak(request: Request) -> Response:
    svc: Services = request.app.state.services
    limit = svc.settings.max_speak_chars
    # Room for the longest text in any JSON spelling, plus the other fields.
    body = validate(SpeakIn, await read_json(request, limit=transport_limit(limit)))
    text = require_text(body.text, field="text", limit=limit)
    await spend(request, "speak")
    pcm = bytearray()
    rate: int | None = None
    spoke = svc.tts.voice
    async for chunk in svc.tts.synthesize(text, voice=body.voice, language=body.language):
        if rate is None:
            rate = chunk.sample_rate
            spoke = chunk.voice or spoke
        pcm += chunk.pcm if chunk.sample_rate == rate else resample(chunk.pcm, chunk.sample_rate, rate)
    if rate is None or not pcm:
        raise ProviderError(f"the text-to-speech provider {svc.tts.name!r} produced no audio")
    audio = await encode_async(bytes(pcm), rate, body.format)
    return Response(
        audio,
        media_type=CONTENT_TYPE[body.format],
        headers={
            "Cache-Control": "no-store",
            "X-Audio-Duration": f"{duration(bytes(pcm), rate):.3f}",
            "X-TTS-Provider": svc.tts.name,
            # the voice that spoke: not the language's own when none is available here
            "X-TTS-Voice": spoke,
        },
    )
