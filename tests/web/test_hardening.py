"""Input that used to break the server for everyone: lone surrogates, deep JSON, escaped text.

Each test drives a real server with real HTTP and WebSocket clients, sends what a hostile or
careless client (or model) sends, and checks that the answer is a clear error or a valid reply and
that the rest of the session and the server keep working.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from parley.app import create_app
from parley.bus.memory import LocalBus
from parley.config import Settings
from parley.providers.llm import ChatDelta, ChatProvider, ChatRequest
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT
from parley.sessions.keys import session_key
from parley.standins import openai as openai_standin
from parley.standins import workers_ai as workers_ai_standin
from parley.standins.server import BackgroundServer, free_port
from parley.store.users import LOCAL_USER
from tests.conftest import ServerFactory, make_settings, sse_events
from tests.rawhttp import send_until_answered
from tests.web.test_bad_input import assert_error
from tests.web.test_ws import recv, until, ws_url

SID = "session-hard"
LONE = "\ud800"
EMOJI = "\U0001f600"


class WritesLoneSurrogates(ChatProvider):
    """A model whose reply holds an unpaired surrogate, as a JSON `\\ud800` escape decodes to."""

    name = "lone"
    model = "lone"

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        for piece in ("bad ", LONE, " reply"):
            yield ChatDelta(piece)


async def post_json(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    """POST `body` written by json.dumps (ASCII escapes, as Python clients send it)."""
    data = json.dumps(body).encode()
    return await client.post(path, content=data, headers={"content-type": "application/json"})


async def history(client: httpx.AsyncClient, sid: str = SID) -> list[dict[str, Any]]:
    r = await client.get("/api/history", params={"sessionId": sid})
    assert r.status_code == 200, r.text
    messages: list[dict[str, Any]] = r.json()["messages"]
    return messages


# -- defect 2: lone surrogates ---------------------------------------------------------------------


async def test_a_lone_surrogate_in_a_frame_is_refused_and_every_socket_keeps_receiving(
    serve: ServerFactory,
) -> None:
    server = serve(chat=EchoChat())
    async with (
        websockets.connect(ws_url(server.url, SID)) as a,
        websockets.connect(ws_url(server.url, SID)) as b,
    ):
        await recv(a)
        await recv(b)
        # json.dumps writes the surrogate as the ASCII escape \ud800, as the client did
        await a.send(json.dumps({"type": "chat", "message": "hello", "clientId": "x" + LONE}))
        refused = await recv(a)
        assert refused["type"] == "error"
        assert refused["error"]["status"] == 400 and refused["error"]["field"] == "clientId"
        assert "clientId" not in refused
        await a.send(json.dumps({"type": "chat", "message": "hi \ud83d" + "there"}))
        refused = await recv(a)
        assert refused["type"] == "error" and refused["error"]["field"] == "message"
        await a.send(json.dumps({"type": "chat", "message": "fine", "clientId": "c-1"}))
        for ws in (a, b):
            reply, before = await until(ws, "reply")
            assert reply["response"] == "You said: fine"
            assert before[0]["type"] == "user_message" and before[0]["clientId"] == "c-1"
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert [m["content"] for m in await history(client)] == ["fine", "You said: fine"]


async def test_lone_surrogates_in_http_text_are_refused_naming_the_field(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        chat = await post_json(client, "/api/chat", {"message": "hi " + LONE, "sessionId": SID})
        assert_error(chat, 400, "message")
        assert "surrogate" in chat.json()["error"]
        # raw bytes of an encoded surrogate (CESU-8), which Python's JSON decoder would let through
        raw = b'{"message": "hi \xed\xa0\x80", "sessionId": "' + SID.encode() + b'"}'
        assert_error(
            await client.post("/api/chat", content=raw, headers={"content-type": "application/json"}),
            400,
            "message",
        )
        speak = await post_json(client, "/api/speak", {"text": "say " + LONE})
        assert_error(speak, 400, "text")
        assert_error(await post_json(client, "/api/clear", {"sessionId": SID, LONE: 1}), 400, "body")
        assert await history(client) == []
        ok = await client.post("/api/chat", json={"message": "still here", "sessionId": SID})
        assert ok.status_code == 200 and ok.json()["response"] == "You said: still here"


async def test_a_lone_surrogate_in_a_model_reply_becomes_a_replacement_character(
    serve: ServerFactory,
) -> None:
    server = serve(chat=WritesLoneSurrogates())
    expected = "bad \ufffd reply"
    async with (
        websockets.connect(ws_url(server.url, SID)) as ws,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        await recv(ws)
        plain = await client.post("/api/chat", json={"message": "hi", "sessionId": SID})
        assert plain.status_code == 200, plain.text
        assert plain.json()["response"] == expected and plain.json()["status"] == "complete"
        reply, _ = await until(ws, "reply")
        assert reply["response"] == expected

        streamed = await client.post("/api/chat", json={"message": "again", "sessionId": SID, "stream": True})
        assert streamed.status_code == 200
        kinds = [name for name, _ in sse_events(streamed.text)]
        assert kinds[-1] == "reply", kinds
        assert sse_events(streamed.text)[-1][1]["response"] == expected
        reply, _ = await until(ws, "reply")
        assert reply["response"] == expected
        stored = await history(client)
    assert [(m["content"], m["status"]) for m in stored if m["role"] == "assistant"] == [
        (expected, "complete"),
        (expected, "complete"),
    ]


class PoisonsTheBusOnce(EchoChat):
    """Publishes one event that no socket can encode, as a bug elsewhere might, then echoes."""

    def __init__(self, bus: LocalBus) -> None:
        super().__init__()
        self.bus = bus
        self.poisoned = False

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        if not self.poisoned:
            self.poisoned = True
            await self.bus.publish(session_key(LOCAL_USER.id, SID), '{"type":"chunk","text":"' + LONE + '"}')
        async for delta in super().stream(request):
            yield delta


async def test_a_socket_that_cannot_be_written_is_closed_not_left_silent(tmp_path: Path) -> None:
    bus = LocalBus()
    app = create_app(make_settings(tmp_path / "d"), chat=PoisonsTheBusOnce(bus), bus=bus)
    with BackgroundServer(app) as server:
        async with (
            websockets.connect(ws_url(server.url, SID)) as a,
            websockets.connect(ws_url(server.url, "someone-else")) as other,
        ):
            await recv(a)
            await recv(other)
            await a.send(json.dumps({"type": "chat", "message": "first"}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await recv(a)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
            # the other session's socket never noticed
            await other.send(json.dumps({"type": "ping"}))
            assert (await recv(other))["type"] == "pong"
        # the client reconnects and the conversation goes on
        async with websockets.connect(ws_url(server.url, SID)) as again:
            await recv(again)
            await again.send(json.dumps({"type": "chat", "message": "second", "clientId": "c-2"}))
            accepted, _ = await until(again, "user_message")
            while accepted.get("clientId") != "c-2":  # the first turn's events may still arrive
                accepted, _ = await until(again, "user_message")
            reply, _ = await until(again, "reply")
            while reply["turnId"] != accepted["turnId"]:
                reply, _ = await until(again, "reply")
            assert reply["response"] == "You said: second"


# -- defect 6: deeply nested JSON ------------------------------------------------------------------

DEEP = b'{"sessionId":"deep","x":' + b"[" * 1500 + b"]" * 1500 + b"}"
NESTED = b'{"sessionId":"deep","x":' + b"[" * 100 + b"]" * 100 + b"}"


@pytest.mark.parametrize(
    "path", ["/api/chat", "/api/clear", "/api/stop", "/api/speak", "/api/offer", "/api/hangup"]
)
async def test_deeply_nested_json_is_a_400_naming_the_body(serve: ServerFactory, path: str) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        for body in (DEEP, NESTED):
            r = await client.post(path, content=body, headers={"content-type": "application/json"})
            assert_error(r, 400, "body", 32)
        assert (await client.get("/healthz")).status_code == 200


async def test_deeply_nested_json_over_the_socket_is_an_error_event(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with websockets.connect(ws_url(server.url, SID)) as ws:
        await recv(ws)
        for frame in (DEEP, NESTED):
            await ws.send(frame.decode())
            event = await recv(ws)
            assert event["type"] == "error"
            assert event["error"]["field"] == "frame" and event["error"]["limit"] == 32
        await ws.send(json.dumps({"type": "chat", "message": "still fine"}))
        reply, _ = await until(ws, "reply")
        assert reply["response"] == "You said: still fine"


# -- defect 8: limits in characters, not escaped bytes ---------------------------------------------


async def test_an_escaped_message_within_the_character_limit_is_accepted(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        # json.dumps writes each emoji as a 12-byte surrogate-pair escape: 60,000+ bytes
        body = {"message": EMOJI * 5000, "sessionId": SID}
        assert len(json.dumps(body)) > 60_000
        r = await post_json(client, "/api/chat", body)
        assert r.status_code == 200, r.text
        assert r.json()["message"]["content"] == "You said: " + EMOJI * 5000
        # the limit is the documented one, in characters
        r = await post_json(client, "/api/chat", {"message": EMOJI * 8001, "sessionId": SID})
        assert_error(r, 400, "message", 8000)
        r = await post_json(client, "/api/chat", {"message": EMOJI * 8000, "sessionId": SID})
        assert r.status_code == 200, r.text
        assert_error(await post_json(client, "/api/speak", {"text": EMOJI * 4001}), 400, "text", 4000)


async def test_an_escaped_message_over_the_socket_is_accepted(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with websockets.connect(ws_url(server.url, SID)) as ws:
        await recv(ws)
        frame = json.dumps({"type": "chat", "message": EMOJI * 6000})
        assert len(frame) > 72_000
        await ws.send(frame)
        accepted, _ = await until(ws, "user_message")
        assert accepted["message"]["content"] == EMOJI * 6000
        await until(ws, "reply")
        await ws.send(json.dumps({"type": "chat", "message": EMOJI * 8001}))
        # the first turn's title event may come first: wait for the refusal itself
        refused, _ = await until(ws, "error")
        assert refused["error"]["field"] == "message" and refused["error"]["limit"] == 8000
        await ws.send(json.dumps({"type": "ping"}))
        await until(ws, "pong")


# -- defect 4: the upload limit holds for a chunked body -------------------------------------------

BOUNDARY = b"parley-boundary"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00data"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def upload_chunked(port: int, audio_bytes: int, piece: int = 65536) -> tuple[bytes, int]:
    """POST /api/transcribe as a chunked multipart body with `audio_bytes` of audio, reading the
    answer while sending. Returns the answer and how many audio bytes were handed to the socket
    before it came (a server that stops reading makes this far smaller than `audio_bytes`)."""
    head = (
        b"POST /api/transcribe HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary="
        + BOUNDARY
        + b"\r\n\r\n"
        + _chunk(
            b"--"
            + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name="sessionId"\r\n\r\n'
            + SID.encode()
            + b"\r\n--"
            + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + WAV
        )
    )
    audio_sent = 0

    def pieces() -> Iterator[bytes]:
        nonlocal audio_sent
        while audio_sent < audio_bytes:
            size = min(piece, audio_bytes - audio_sent)
            audio_sent += size
            yield _chunk(b"\0" * size)
        yield _chunk(b"\r\n--" + BOUNDARY + b"--\r\n") + b"0\r\n\r\n"

    answer, _ = send_until_answered(port, head, pieces())
    return answer, audio_sent


def test_a_chunked_upload_over_the_limit_is_refused_before_it_is_all_sent(
    serve: ServerFactory, tmp_path: Path
) -> None:
    limit = 64 * 1024
    server = serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(delay=0),
        settings=make_settings(tmp_path / "d", max_audio_bytes=limit),
    )
    total = 64 * 1024 * 1024
    answer, sent = upload_chunked(server.port, total)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    error = json.loads(body)
    assert (error["field"], error["limit"], error["status"]) == ("audio", limit, 413)
    # the answer came while most of the body was still unsent: the server stopped reading at
    # the limit (what was sent beyond it sits in socket buffers, a few MB at most)
    assert sent < total // 4, sent
    # an upload within the limit, chunked the same way, is transcribed
    answer, sent = upload_chunked(server.port, limit // 2)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["text"] == "hello"


# -- defect 5: no secrets, upstream text or internal addresses reach clients -----------------------

# made per run, so nothing secret-shaped sits in the repository
KEY = f"sk-parley-test-{secrets.token_hex(8)}"
PASSWORD = "hunter2-in-the-url"


def leaks(text: str, *secrets: str) -> list[str]:
    return [s for s in secrets if s in text]


async def test_an_upstream_that_echoes_the_key_leaks_nothing_to_clients(
    serve: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with BackgroundServer(openai_standin.create_app(api_key=KEY, echo_key=True)) as upstream:
        internal = upstream.url.removeprefix("http://")
        settings = make_settings(
            tmp_path / "d", llm="openai", llm_base_url=upstream.url + "/v1", llm_api_key=KEY
        )
        server = serve(settings=settings)  # the chat provider is built from the settings, as in `serve`
        async with (
            websockets.connect(ws_url(server.url, SID)) as ws,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            await recv(ws)
            for trigger, status in (("400", 502), ("500", 503), ("429", 429)):
                r = await client.post("/api/chat", json={"message": f"hi #error:{trigger}", "sessionId": SID})
                assert r.status_code == status, r.text
                assert leaks(r.text, KEY, "Incorrect API key", internal) == []
                assert "OpenAI-compatible server (PARLEY_LLM_BASE_URL)" in r.json()["error"]
                failed, _ = await until(ws, "error")
                assert leaks(json.dumps(failed), KEY, "Incorrect API key", internal) == []
            streamed = await client.post(
                "/api/chat", json={"message": "#error:400", "sessionId": SID, "stream": True}
            )
            assert leaks(streamed.text, KEY, "Incorrect API key", internal) == []
            stored = json.dumps(await history(client))
    assert leaks(stored, KEY, "Incorrect API key", internal) == []
    assert "HTTP 400" in stored
    # the operator still learns what the upstream said, with the key masked
    assert "Incorrect API key provided: ***" in caplog.text
    assert KEY not in caplog.text


async def test_credentials_in_the_base_url_leak_nowhere_on_a_timeout(
    serve: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with BackgroundServer(openai_standin.create_app()) as upstream:
        base = f"http://parley:{PASSWORD}@127.0.0.1:{upstream.port}/v1"
        settings = make_settings(tmp_path / "d", llm="openai", llm_base_url=base, provider_timeout=0.3)
        server = serve(settings=settings)
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.post("/api/chat", json={"message": "#sleep:5", "sessionId": SID})
            assert r.status_code == 504, r.text
            assert leaks(r.text, PASSWORD, "parley:", str(upstream.port)) == []
            assert "did not answer" in r.json()["error"]
            stored = json.dumps(await history(client))
    assert leaks(stored, PASSWORD, str(upstream.port)) == []
    assert PASSWORD not in caplog.text


async def test_workers_ai_errors_and_addresses_stay_in_the_log(
    serve: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = f"cf-test-token-{secrets.token_hex(13)}"

    def cf(base_url: str, name: str) -> Settings:
        return make_settings(
            tmp_path / name,
            llm="workers-ai",
            cloudflare_account_id="test-account",
            cloudflare_api_token=token,
            workers_ai_base_url=base_url,
        )

    with BackgroundServer(workers_ai_standin.create_app(token=token)) as upstream:
        server = serve(settings=cf(upstream.url + "/client/v4", "a"))
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.post("/api/chat", json={"message": "#error:5006", "sessionId": SID})
            assert r.status_code == 502, r.text
            assert leaks(r.text, "AiError", str(upstream.port), token) == []
            assert r.json()["error"] == (
                "Workers AI answered @cf/meta/llama-3.3-70b-instruct-fp8-fast with error 5006"
            )
    closed = free_port()
    server = serve(settings=cf(f"http://cf:{PASSWORD}@127.0.0.1:{closed}/client/v4", "b"))
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/chat", json={"message": "hi", "sessionId": SID})
        assert r.status_code == 503, r.text
        assert leaks(r.text, PASSWORD, str(closed)) == []
        assert "PARLEY_WORKERS_AI_BASE_URL" in r.json()["error"]
    assert "AiError: error 5006" in caplog.text and f"127.0.0.1:{closed}" in caplog.text
    assert leaks(caplog.text, PASSWORD, token) == []
