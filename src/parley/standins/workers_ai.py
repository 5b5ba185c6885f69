"""A local Workers AI: the REST `ai/run` endpoint for Llama-style chat and the Whisper models.

It answers in the documented envelopes and event stream (padding field `p` included), so the
real `WorkersAIChat` and `WorkersAISTT` can be tested and benchmarked without Cloudflare:

    app = create_app(token="t")
    with BackgroundServer(app) as server:
        client = WorkersAIClient(account_id="test-account", api_token="t",
                                 base_url=server.url + "/client/v4")
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import random
import string
import time
from collections.abc import AsyncGenerator, Collection
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from parley.standins.common import (
    StreamAborted,
    TrackedStream,
    Triggers,
    init_state,
    last_user_text,
    mark_first_token,
    pause,
    quiet_aborts,
    record,
    reply_text,
    sse,
    tokens_of,
    tool_call_in,
    transcript_of,
    triggers_in,
    triggers_in_audio,
)

WHISPER = "@cf/openai/whisper"
WHISPER_TINY = "@cf/openai/whisper-tiny-en"
WHISPER_TURBO = "@cf/openai/whisper-large-v3-turbo"
RAW_AUDIO_MODELS = frozenset({WHISPER, WHISPER_TINY})
DEFAULT_CHAT_MODELS = frozenset(
    {
        "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
        "@cf/meta/llama-3.1-8b-instruct",
        "@cf/meta/llama-3.1-8b-instruct-fast",
        "@cf/mistral/mistral-7b-instruct-v0.1",
    }
)

# The HTTP status Cloudflare documents for each error code (unknown codes answer 500).
ERROR_STATUS = {3036: 429, 3040: 429, 3007: 408, 3006: 413, 5007: 400, 3042: 404, 5016: 403, 10000: 401}
ERROR_MESSAGE = {
    3036: "AiError: You have used up your daily free allocation of 10,000 neurons.",
    3040: "AiError: Capacity temporarily exceeded, please try again.",
    3007: "AiError: Request timeout",
    3006: "AiError: Request is too large",
    3042: "AiError: Invalid model ID",
    5016: "AiError: Model Agreement: submit the prompt 'agree' to accept the licence",
    10000: "Authentication error",
}
_PADDING = string.ascii_letters + string.digits


def envelope_error(code: int, message: str | None = None, status: int | None = None) -> JSONResponse:
    body = {
        "success": False,
        "errors": [{"code": code, "message": message or ERROR_MESSAGE.get(code, f"AiError: error {code}")}],
        "messages": [],
        "result": None,
    }
    return JSONResponse(body, status_code=status or ERROR_STATUS.get(code, 500))


def _code(trigger: str) -> int:
    return int(trigger) if trigger.isdigit() else 0


def envelope(result: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"result": result, "success": True, "errors": [], "messages": []})


def create_app(
    *,
    account_id: str = "test-account",
    token: str = "test-token",
    first_token_delay: float = 0.0,
    token_interval: float = 0.0,
    padding: bool = True,
    doubled: bool = False,
    chat_models: Collection[str] = DEFAULT_CHAT_MODELS,
) -> Starlette:
    """A Workers AI stand-in; base URL for clients is `<server url>/client/v4`.

    `doubled` also puts each token in `choices[0].delta.content`, as some real streams do.
    State for tests: `requests`, `cancelled_streams`, `completed_streams`, `first_byte_times`, and
    for benchmarks `first_bytes` and `last_bytes`: `perf_counter()` just before a stream's first and
    last token, keyed by its last user message, to pair each stream with what its clients saw.
    """
    rng = random.Random()
    quiet_aborts()

    async def run(request: Request) -> Response:
        model = request.path_params["model"]
        body = await request.body()
        entry = record(request, model=model, account_id=request.path_params["account_id"], bytes=len(body))
        if not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {token}"):
            return envelope_error(10000)
        if request.path_params["account_id"] != account_id:
            path = f"/client/v4/accounts/{request.path_params['account_id']}/ai/run"
            return envelope_error(
                7003, f"Could not route to {path}, perhaps your object identifier is invalid?", 400
            )
        if model in TTS_MODELS:
            return await speak(request, model, entry)
        if model in RAW_AUDIO_MODELS or model == WHISPER_TURBO:
            return await transcribe(request, model, body, entry)
        if model not in chat_models:
            return envelope_error(5007, f"AiError: No such model {model} or task")
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        entry["json"] = payload
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            return envelope_error(5006, "AiError: Error: oneOf at '/' not met, required: messages", 400)
        return await chat(request, payload)

    async def chat(request: Request, payload: dict[str, Any]) -> Response:
        messages = payload["messages"]
        said = last_user_text(messages)
        triggers = triggers_in(said)
        if triggers.error is not None:
            return envelope_error(_code(triggers.error))
        if (called := tool_call_in(payload)) is not None:
            # the documented result: no text, the calls in `tool_calls` (arguments an object)
            await pause(request, first_token_delay + triggers.sleep)
            name, arguments = called
            calls = [{"name": name, "arguments": json.loads(arguments)}]
            usage0 = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            if not payload.get("stream"):
                return envelope({"response": None, "tool_calls": calls, "usage": usage0})

            async def called_stream() -> AsyncGenerator[bytes, None]:
                yield sse({"response": "", "tool_calls": calls})
                yield sse({"response": "", "usage": usage0})
                yield sse("[DONE]")

            return TrackedStream(request.app.state, called_stream())
        max_tokens = payload.get("max_tokens", 256)
        tokens = tokens_of(reply_text(messages))[: max_tokens if isinstance(max_tokens, int) else 256]
        prompt_tokens = sum(
            len(tokens_of(str(m.get("content", "")))) for m in messages if isinstance(m, dict)
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        if not payload.get("stream"):
            await pause(request, first_token_delay + triggers.sleep)
            return envelope({"response": "".join(tokens), "tool_calls": [], "usage": usage})
        return TrackedStream(request.app.state, stream(request, said, tokens, usage, triggers))

    async def stream(
        request: Request, said: str, tokens: list[str], usage: dict[str, int], triggers: Triggers
    ) -> AsyncGenerator[bytes, None]:
        await asyncio.sleep(first_token_delay + triggers.sleep)
        for index, token in enumerate(tokens):
            if index:
                await asyncio.sleep(token_interval)
            if triggers.fail_midstream and index == 2:
                raise StreamAborted
            event: dict[str, Any] = {"response": token}
            if padding:
                event["p"] = "".join(rng.choices(_PADDING, k=rng.randint(1, 24)))
            if doubled:
                event["choices"] = [{"index": 0, "delta": {"content": token}}]
            if index == 0:
                mark_first_token(request.app.state)
                request.app.state.first_bytes[said] = request.app.state.first_byte_times[-1]
            if index == len(tokens) - 1:
                request.app.state.last_bytes[said] = time.perf_counter()
            yield sse(event)
        yield sse({"response": "", "usage": usage})
        yield sse("[DONE]")

    async def transcribe(request: Request, model: str, body: bytes, entry: dict[str, Any]) -> Response:
        language: str | None = None
        if model == WHISPER_TURBO:
            try:
                payload = await request.json()
                audio = base64.b64decode(payload["audio"], validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                return envelope_error(
                    5006, "AiError: Type mismatch of '/audio', expected a base64 string", 400
                )
            entry["json"] = {k: v for k, v in payload.items() if k != "audio"}
            language = payload.get("language")
        elif request.headers.get("content-type", "").startswith("application/json"):
            try:
                audio = bytes((await request.json())["audio"])
            except (ValueError, KeyError, TypeError):
                return envelope_error(5006, "AiError: Type mismatch of '/audio', expected bytes", 400)
        else:
            audio = body
        entry["audio_bytes"] = len(audio)
        if not audio:
            return envelope_error(5006, "AiError: audio is empty", 400)
        triggers = triggers_in_audio(audio)
        if triggers.error is not None:
            return envelope_error(_code(triggers.error))
        await pause(request, triggers.sleep)
        text = transcript_of(audio)
        # A nominal duration, as if the bytes were 16 kHz 16-bit mono.
        duration = round(len(audio) / 32000, 3)
        result: dict[str, Any] = {"text": text, "word_count": len(text.split()), "vtt": ""}
        if model == WHISPER_TURBO:
            segment = {"start": 0.0, "end": duration, "text": text, "temperature": 0.0, "avg_logprob": -0.1}
            result["segments"] = [segment | {"compression_ratio": 1.0, "no_speech_prob": 0.01, "words": []}]
            result["transcription_info"] = {
                "language": language or "en",
                "language_probability": 1.0,
                "duration": duration,
                "duration_after_vad": duration,
            }
        else:
            result["words"] = []
        return envelope(result)

    app = Starlette(
        routes=[Route("/client/v4/accounts/{account_id}/ai/run/{model:path}", run, methods=["POST"])]
    )
    init_state(app.state)
    app.state.first_bytes = {}
    app.state.last_bytes = {}
    return app


# -- text to speech: real audio (a tone as long as the text) in the encoding asked for ----------
AURA = "@cf/deepgram/aura-1"
MELOTTS = "@cf/myshell-ai/melotts"
TTS_MODELS = frozenset({AURA, MELOTTS})
AURA_SPEAKERS = frozenset(
    {
        "angus",
        "asteria",
        "arcas",
        "orion",
        "orpheus",
        "athena",
        "luna",
        "zeus",
        "perseus",
        "helios",
        "hera",
        "stella",
    }
)
MELOTTS_LANGS = frozenset({"en", "es", "fr", "zh", "jp", "kr"})
# Deepgram encoding -> (stand-in format, Content-Type); linear16 is wav or raw by `container`.
_AURA_ENCODINGS = {"mp3": ("mp3", "audio/mpeg"), "opus": ("ogg", "audio/ogg"), "flac": ("flac", "audio/flac")}


async def speak(request: Request, model: str, entry: dict[str, Any]) -> Response:
    """Aura answers binary audio; MeloTTS a JSON envelope with base64 MP3 (raw MP3 if `#raw`)."""
    from parley.standins.speech import speech_audio, streamed_wav

    try:
        payload = await request.json()
    except ValueError:
        payload = None
    entry["json"] = payload
    key = "text" if model == AURA else "prompt"
    if not isinstance(payload, dict) or not isinstance(payload.get(key), str) or not payload[key]:
        return envelope_error(5006, f"AiError: Error: required properties at '/' are '{key}'", 400)
    text = payload[key]
    triggers = triggers_in(text)
    if triggers.error is not None:
        return envelope_error(_code(triggers.error))
    await pause(request, triggers.sleep)
    if model == MELOTTS:
        lang = payload.get("lang", "en")
        if lang not in MELOTTS_LANGS:
            return envelope_error(5006, f"AiError: lang must be one of {sorted(MELOTTS_LANGS)}", 400)
        mp3 = await asyncio.to_thread(speech_audio, text, "mp3", 44100)
        if "#raw" in text:
            return Response(mp3, media_type="audio/mpeg")
        return envelope({"audio": base64.b64encode(mp3).decode("ascii")})
    speaker = payload.get("speaker", "angus")
    if speaker not in AURA_SPEAKERS:
        return envelope_error(5006, f"AiError: speaker must be one of {sorted(AURA_SPEAKERS)}", 400)
    encoding = payload.get("encoding", "mp3")
    rate = payload.get("sample_rate", 24000)
    if not isinstance(rate, int) or not 8000 <= rate <= 48000:
        return envelope_error(5006, "AiError: sample_rate must be an integer from 8000 to 48000", 400)
    if encoding == "linear16":
        if payload.get("container", "wav") == "wav":
            wav = await asyncio.to_thread(speech_audio, text, "wav", rate)
            return Response(streamed_wav(wav), media_type="audio/wav")
        pcm = await asyncio.to_thread(speech_audio, text, "pcm", rate)
        return Response(pcm, media_type="application/octet-stream")
    if encoding not in _AURA_ENCODINGS:
        return envelope_error(5006, f"AiError: unsupported encoding {encoding!r}", 400)
    fmt, media_type = _AURA_ENCODINGS[encoding]
    data = await asyncio.to_thread(speech_audio, text, fmt, 48000 if fmt == "ogg" else 24000)
    return Response(data, media_type=media_type)
