"""The whole server with the real Workers AI providers against the local Workers AI stand-in:
configuration by settings alone, streaming, stop reaching the model call, mapped errors, logs."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.audio.encode import encode_wav
from parley.config import Settings
from parley.providers.workers_ai.tts import MELOTTS_MODEL
from parley.standins import workers_ai
from parley.standins.server import BackgroundServer
from tests.conftest import ServerFactory, make_settings, sse_events

SID = "session-cf"
TOKEN = f"cf-test-token-{secrets.token_hex(8)}"  # per run: nothing secret-shaped committed


@pytest.fixture
def upstream() -> Iterator[BackgroundServer]:
    with BackgroundServer(workers_ai.create_app(token=TOKEN, token_interval=0.05)) as server:
        yield server


def cf_settings(tmp_path: Path, upstream: BackgroundServer, **extra: object) -> Settings:
    values: dict[str, object] = {
        "llm": None,
        "stt": None,
        "cloudflare_account_id": "test-account",
        "cloudflare_api_token": TOKEN,
        "workers_ai_base_url": upstream.url + "/client/v4",
    }
    return make_settings(tmp_path / "data", **{**values, **extra})


async def test_chat_and_transcribe_through_workers_ai(
    serve: ServerFactory, upstream: BackgroundServer, tmp_path: Path
) -> None:
    server = serve(settings=cf_settings(tmp_path, upstream))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        health = (await client.get("/healthz")).json()
        assert health["chat"] == {
            "provider": "workers-ai",
            "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
        }
        r = await client.post("/api/chat", json={"message": "hello cloud", "sessionId": SID, "stream": True})
        evs = sse_events(r.text)
        assert "".join(d["text"] for n, d in evs if n == "chunk") == "You said: hello cloud"
        assert evs[-1][1]["usage"]["total_tokens"] > 0
        # A real second of WAV (the server measures its length), the stand-in's marker after it.
        audio = encode_wav(bytes(32000), 16000) + b"SAY:turn on the lights"
        r = await client.post(
            "/api/transcribe", files={"audio": ("r.wav", audio, "audio/wav")}, data={"sessionId": SID}
        )
        assert r.status_code == 200
        assert r.json() == {"text": "turn on the lights", "sessionId": SID, "language": None}
    seen = upstream.app.state.requests  # type: ignore[attr-defined]
    chat_call = next(req for req in seen if "llama" in req["model"])
    assert chat_call["json"]["max_tokens"] == 512
    assert chat_call["json"]["messages"][0]["role"] == "system"


async def test_a_recording_past_max_audio_seconds_is_a_413_and_never_sent(
    serve: ServerFactory, upstream: BackgroundServer, tmp_path: Path
) -> None:
    server = serve(settings=cf_settings(tmp_path, upstream, max_audio_seconds=2.0))
    state = upstream.app.state  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for seconds, status in ((3, 413), (1, 200)):
            audio = encode_wav(bytes(32000 * seconds), 16000) + b"SAY:ok"
            r = await client.post(
                "/api/transcribe", files={"audio": ("r.wav", audio, "audio/wav")}, data={"sessionId": SID}
            )
            assert r.status_code == status, r.text
            if status == 413:
                assert r.json() == {
                    "error": "audio is longer than 2 seconds",
                    "code": "payload_too_large",
                    "status": 413,
                    "field": "audio",
                    "limit": 2.0,
                }
                assert state.requests == []  # refused before Workers AI saw it
    assert [req["model"] for req in state.requests] == ["@cf/openai/whisper"]


async def test_tts_model_picks_the_workers_ai_voice_model(
    serve: ServerFactory, upstream: BackgroundServer, tmp_path: Path
) -> None:
    settings = cf_settings(tmp_path, upstream, tts="workers-ai", tts_model=MELOTTS_MODEL)
    server = serve(settings=settings)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.post("/api/speak", json={"text": "Good evening.", "format": "wav"})
    assert r.status_code == 200 and r.content.startswith(b"RIFF")
    state = upstream.app.state  # type: ignore[attr-defined]
    assert [req["model"] for req in state.requests] == [MELOTTS_MODEL]


async def test_a_reply_that_spends_all_of_max_tokens_is_stored_as_cut_off(
    serve: ServerFactory, upstream: BackgroundServer, tmp_path: Path
) -> None:
    # Workers AI's own stream does not say why it stopped: the usage shows max_tokens spent.
    server = serve(settings=cf_settings(tmp_path, upstream, max_tokens=3))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        cut = (await client.post("/api/chat", json={"message": "one two three", "sessionId": SID})).json()
        assert cut["response"] == "You said: one" and cut["message"]["finishReason"] == "length"
    server = serve(settings=cf_settings(tmp_path, upstream, max_tokens=64))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        whole = (await client.post("/api/chat", json={"message": "one two three", "sessionId": SID})).json()
        history = (await client.get("/api/history", params={"sessionId": SID})).json()["messages"]
    assert whole["response"] == "You said: one two three" and whole["message"]["finishReason"] is None
    assert [m["finishReason"] for m in history[1::2]] == ["length", None]


async def test_stop_cancels_the_upstream_model_call(
    serve: ServerFactory, upstream: BackgroundServer, tmp_path: Path
) -> None:
    server = serve(settings=cf_settings(tmp_path, upstream))
    long = " ".join(f"word{i}" for i in range(60))
    state = upstream.app.state  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sending = asyncio.create_task(client.post("/api/chat", json={"message": long, "sessionId": SID}))
        while not state.first_byte_times:
            await asyncio.sleep(0.01)
        assert (await client.post("/api/stop", json={"sessionId": SID})).json()["stopped"] is True
        assert (await sending).json()["status"] == "cancelled"
        for _ in range(200):
            if state.cancelled_streams:
                break
            await asyncio.sleep(0.01)
    assert state.cancelled_streams == 1
    assert state.completed_streams == 0


@pytest.mark.parametrize(
    ("trigger", "status", "words"),
    [("#error:3036", 429, "00:00 UTC"), ("#error:3040", 429, "capacity"), ("#error:3007", 504, "")],
)
async def test_upstream_errors_map_to_clear_statuses_and_failed_turns(
    serve: ServerFactory, upstream: BackgroundServer, tmp_path: Path, trigger: str, status: int, words: str
) -> None:
    server = serve(settings=cf_settings(tmp_path, upstream))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.post("/api/chat", json={"message": f"hi {trigger}", "sessionId": SID})
        assert r.status_code == status
        assert words.lower() in r.json()["error"].lower()
        history = (await client.get("/api/history", params={"sessionId": SID})).json()["messages"]
        assert [m["status"] for m in history] == ["complete", "failed"]
        assert history[1]["error"] == r.json()["error"]


async def test_a_wrong_token_names_the_variable_and_is_never_echoed(
    serve: ServerFactory, upstream: BackgroundServer, tmp_path: Path
) -> None:
    settings = cf_settings(tmp_path, upstream, cloudflare_api_token="wrong-token-xyz")
    server = serve(settings=settings)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.post("/api/chat", json={"message": "hi", "sessionId": SID})
    assert r.status_code == 503
    assert "CLOUDFLARE_API_TOKEN" in r.json()["error"]
    assert "wrong-token" not in r.text


async def test_logs_have_one_line_per_request_and_turn_without_bodies_or_secrets(
    serve: ServerFactory, upstream: BackgroundServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="parley")
    server = serve(settings=cf_settings(tmp_path, upstream))
    secret_text = "my-very-private-message-text"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        await client.post("/api/chat", json={"message": secret_text, "sessionId": SID})
    # the access line is written once the response has gone out, so it may trail the client a little
    for _ in range(100):
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("parley")]
        if any(line.startswith("request ") and "/api/chat" in line for line in lines):
            break
        await asyncio.sleep(0.02)
    turn_lines = [line for line in lines if line.startswith("turn ")]
    request_lines = [line for line in lines if line.startswith("request ") and "/api/chat" in line]
    assert len(turn_lines) == 1 and len(request_lines) == 1
    assert f"session={SID}" in turn_lines[0]
    assert "provider=workers-ai" in turn_lines[0] and "outcome=complete" in turn_lines[0]
    assert "ttft_ms=" in turn_lines[0] and "status=200" in request_lines[0]
    assert f"session={SID}" in request_lines[0]
    joined = "\n".join(lines)
    assert secret_text not in joined
    assert TOKEN not in joined
