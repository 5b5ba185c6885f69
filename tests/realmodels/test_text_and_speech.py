"""A new user's server: no configuration, no network, the bundled models answer for real."""

from __future__ import annotations

import asyncio
import time

import httpx

from parley.audio.encode import encode_wav
from parley.config import Settings
from parley.providers.factory import build_tts
from tests.conftest import ServerFactory, require_tool, sse_events
from tests.realmodels.conftest import spoken, word_error_rate

SENTENCE = "Please turn on the kitchen lights and close the window."


async def ready(client: httpx.AsyncClient, deadline: float = 120.0) -> dict[str, object]:
    """/healthz once the background warm-up has loaded every model (polled: another thread)."""
    until = time.monotonic() + deadline
    while True:
        health: dict[str, object] = (await client.get("/healthz")).json()
        states = health["models"]
        assert isinstance(states, dict) and states, health
        assert "failed" not in states.values(), health
        if set(states.values()) == {"ready"}:
            return health
        assert time.monotonic() < until, f"models not ready: {health}"
        await asyncio.sleep(0.1)


async def test_the_defaults_are_the_bundled_models_loaded_ahead(serve: ServerFactory) -> None:
    server = serve()
    async with httpx.AsyncClient(base_url=server.url) as client:
        health = await ready(client)
    assert health["chat"] == {"provider": "llama-cpp", "model": "smollm2-135m-instruct"}
    assert health["stt"] == {"provider": "faster-whisper", "model": "base"}
    assert health["tts"] == {"provider": "piper", "voice": "en_US-joe-medium"}
    assert health["vad"] == "silero"
    assert health["models"] == {"chat": "ready", "text-to-speech": "ready", "speech-to-text": "ready"}


async def test_piper_speech_is_transcribed_by_whisper_through_the_api(
    serve: ServerFactory, settings: Settings
) -> None:
    tts = build_tts(settings)
    try:
        pcm, rate = await spoken(tts, SENTENCE)
    finally:
        await tts.aclose()
    server = serve()
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        r = await client.post(
            "/api/transcribe",
            files={"audio": ("question.wav", encode_wav(pcm, rate), "audio/wav")},
            data={"sessionId": "speech-1"},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert word_error_rate(SENTENCE, body["text"]) <= 0.2, body
    assert body["language"] == "en"


async def test_a_chat_with_nothing_configured_streams_a_real_reply_and_stores_it(
    serve: ServerFactory,
) -> None:
    server = serve()
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        r = await client.post(
            "/api/chat",
            json={"message": "What is the capital of France?", "sessionId": "chat-1", "stream": True},
        )
        assert r.status_code == 200, r.text
        events = sse_events(r.text)
        history = (await client.get("/api/history", params={"sessionId": "chat-1"})).json()["messages"]
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["user_message", "turn_started"] and kinds[-1] == "reply"
    chunks = [data["text"] for kind, data in events if kind == "chunk"]
    assert len(chunks) >= 2, "the reply came in one piece: not streamed"
    reply = events[-1][1]["response"]
    assert reply.strip() and reply == "".join(chunks)
    assert [(m["role"], m["status"]) for m in history] == [("user", "complete"), ("assistant", "complete")]
    assert history[1]["content"] == reply


async def test_stop_ends_a_real_llama_cpp_reply_and_keeps_what_was_written(serve: ServerFactory) -> None:
    server = serve()
    body = {"message": "Count from one to two hundred, one number per line.", "sessionId": "stop-1"}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=120) as client,
        client.stream("POST", "/api/chat", json=body | {"stream": True}) as response,
    ):
        seen: list[str] = []
        stopped = False
        async for line in response.aiter_lines():
            seen.append(line)
            if line.startswith("event: chunk") and not stopped:
                stop = await client.post("/api/stop", json={"sessionId": "stop-1"})
                assert stop.status_code == 200, stop.text
                stopped = True
        history = (await client.get("/api/history", params={"sessionId": "stop-1"})).json()["messages"]
    events = sse_events("\n".join(seen))
    assert events[-1][0] == "cancelled", [kind for kind, _ in events]
    assert history[-1]["role"] == "assistant" and history[-1]["status"] == "cancelled"
    # The model was cut short: far fewer than the 200 lines it was asked for.
    assert history[-1]["content"].count("\n") < 50


async def test_a_language_without_a_voice_here_is_spoken_by_a_voice_that_speaks_it(
    serve: ServerFactory,
) -> None:
    """Offline, German has no Piper voice: espeak-ng speaks it; Xhosa, which espeak-ng does not
    speak either, is read by the voice there is. Each answer says by whom."""
    require_tool("espeak-ng", "the fallback voice of languages with no Piper voice here")
    server = serve()
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        german = await client.post("/api/speak", json={"text": "Guten Tag.", "language": "de"})
        xhosa = await client.post("/api/speak", json={"text": "Molo.", "language": "xh"})
    for r in (german, xhosa):
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "audio/wav" and float(r.headers["X-Audio-Duration"]) > 0.3
    assert german.headers["X-TTS-Voice"] == "espeak-ng de"
    assert xhosa.headers["X-TTS-Voice"] == "en_US-joe-medium"
