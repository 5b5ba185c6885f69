"""OpenAIChat and OpenAISTT against the OpenAI-compatible stand-in (and scripted upstreams) over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette

from parley.errors import (
    ParleyError,
    ProviderError,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from parley.providers.llm import ChatDelta, ChatMessage, ChatRequest, Usage
from parley.providers.openai import OpenAIChat, OpenAIClient, OpenAISTT
from parley.providers.stt import AudioInput
from parley.standins.common import init_state
from parley.standins.openai import create_app
from parley.standins.server import BackgroundServer, free_port

from .conftest import ScriptedUpstream, cut, wait_until

KEY = "sk-test-0123456789"


@dataclass
class Upstream:
    app: Starlette
    base_url: str


def _serve(*, api_key: str | None, token_interval: float = 0.0) -> Iterator[Upstream]:
    app = create_app(
        api_key=api_key, token_interval=token_interval, models=("gpt-4o-mini", "whisper-1", "llama3.2")
    )
    with BackgroundServer(app) as server:
        yield Upstream(app, server.url + "/v1")


@pytest.fixture(scope="module")
def _keyed() -> Iterator[Upstream]:
    yield from _serve(api_key=KEY)


@pytest.fixture(scope="module")
def _open() -> Iterator[Upstream]:
    yield from _serve(api_key=None, token_interval=0.05)


@pytest.fixture
def upstream(_keyed: Upstream) -> Upstream:
    init_state(_keyed.app.state)
    return _keyed


@pytest.fixture
def keyless(_open: Upstream) -> Upstream:
    """Like Ollama: no key needed; also slow enough to cancel in the middle."""
    init_state(_open.app.state)
    return _open


def client(base_url: str, *, api_key: str | None = KEY, timeout: float = 5.0, **names: str) -> OpenAIClient:
    return OpenAIClient(base_url=base_url, api_key=api_key, timeout=timeout, **names)


@pytest.fixture
async def chat(upstream: Upstream) -> AsyncIterator[OpenAIChat]:
    provider = OpenAIChat(client(upstream.base_url))
    yield provider
    await provider.aclose()


def ask(text: str, *, temperature: float | None = None, stop: list[str] | None = None) -> ChatRequest:
    return ChatRequest([ChatMessage("user", text)], max_tokens=64, temperature=temperature, stop=stop or [])


async def collect(provider: OpenAIChat, request: ChatRequest) -> list[ChatDelta]:
    return [delta async for delta in provider.stream(request)]


def text_of(deltas: list[ChatDelta]) -> str:
    return "".join(d.text for d in deltas)


# -- chat -----------------------------------------------------------------------------------------


async def test_consecutive_streams_reuse_one_connection(chat: OpenAIChat, upstream: Upstream) -> None:
    for i in range(4):
        await collect(chat, ask(f"turn {i}"))
    assert len({r["client_port"] for r in upstream.app.state.requests}) == 1


async def test_streams_content_and_usage(chat: OpenAIChat, upstream: Upstream) -> None:
    deltas = await collect(chat, ask("hello there", temperature=0.5, stop=["\n\n"]))

    assert [d.text for d in deltas[:-1]] == ["You", " said:", " hello", " there"]
    assert deltas[-1] == ChatDelta(usage=Usage(2, 4, 6), finish_reason="stop")
    sent = upstream.app.state.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["authorized"]
    assert sent["json"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "stop": ["\n\n"],
    }


async def test_works_without_an_api_key(keyless: Upstream) -> None:
    provider = OpenAIChat(client(keyless.base_url, api_key=None), model="llama3.2")
    try:
        deltas = await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert text_of(deltas) == "You said: hi"
    assert not keyless.app.state.requests[-1]["authorized"]


async def test_chunks_split_across_reads(scripted: ScriptedUpstream) -> None:
    def chunk(delta: dict[str, str], usage: object = None) -> bytes:
        body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}], "usage": usage}
        return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\r\n\r\n"

    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    stream = (
        chunk({"role": "assistant", "content": ""})
        + chunk({"content": "Gr\u00fc\u00dfe"})
        + chunk({"content": " \U0001f30d"})
        + b'data: {"object":"chat.completion.chunk","choices":[],"usage":'
        + json.dumps(usage).encode()
        + b"}\n\n"
        + b"data: [DONE]\n\n"
    )
    globe = stream.index("\U0001f30d".encode())
    scripted.script(cut(stream, globe + 1, globe + 3, stream.index(b"\r\n") + 1))
    provider = OpenAIChat(client(scripted.url))
    try:
        deltas = await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert [d.text for d in deltas[:-1]] == ["Gr\u00fc\u00dfe", " \U0001f30d"]
    assert deltas[-1].usage == Usage(5, 2, 7)


async def test_credentials_in_the_base_url_are_sent_as_basic_auth_unless_a_key_is_set(
    scripted: ScriptedUpstream,
) -> None:
    done = json.dumps({"choices": [{"index": 0, "message": {"content": "ok"}}]}).encode()
    scripted.script([done], content_type=b"application/json")
    host = scripted.url.removeprefix("http://")
    for api_key, expected in (
        (None, "Basic " + base64.b64encode(b"gw:p%ss").decode()),
        (KEY, f"Bearer {KEY}"),
    ):
        provider = OpenAIChat(client(f"http://gw:p%25ss@{host}/v1", api_key=api_key))
        try:
            assert text_of(await collect(provider, ask("hi"))) == "ok"
        finally:
            await provider.aclose()
        assert scripted.heads[-1]["authorization"] == expected
        assert scripted.heads[-1]["host"] == host  # the credentials left the URL


async def test_plain_completion_is_accepted_when_the_server_ignores_stream(
    scripted: ScriptedUpstream,
) -> None:
    completion = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "all at once"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }
    scripted.script([json.dumps(completion).encode()], content_type=b"application/json")
    provider = OpenAIChat(client(scripted.url))
    try:
        deltas = await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert deltas == [ChatDelta(text="all at once"), ChatDelta(usage=Usage(1, 3, 4))]


async def test_error_event_inside_the_stream(
    scripted: ScriptedUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    error = {"error": {"message": "upstream model crashed", "type": "server_error", "code": None}}
    scripted.script(
        [
            b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
            b"data: " + json.dumps(error).encode() + b"\n\n",
        ]
    )
    provider = OpenAIChat(client(scripted.url))
    try:
        with pytest.raises(ProviderError, match="error while writing the reply") as caught:
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    # the upstream's words are logged for the operator, never passed on to clients
    assert "crashed" not in str(caught.value.to_dict()) and "upstream model crashed" in caplog.text


@pytest.mark.parametrize(
    ("trigger", "error", "status", "words"),
    [
        ("429", ProviderRateLimited, 429, "rate limiting"),
        ("insufficient_quota", ProviderRateLimited, 429, "quota is used up"),
        ("401", ProviderNotConfigured, 503, "PARLEY_LLM_API_KEY"),
        ("404", ProviderNotConfigured, 503, "PARLEY_LLM_MODEL"),
        ("500", ProviderUnavailable, 503, "HTTP 500"),
        ("503", ProviderUnavailable, 503, "HTTP 503"),
        ("400", ProviderError, 502, "HTTP 400"),
    ],
)
async def test_http_errors_map_to_parley_errors(
    chat: OpenAIChat, trigger: str, error: type[ParleyError], status: int, words: str
) -> None:
    with pytest.raises(error, match=words) as caught:
        await collect(chat, ask(f"#error:{trigger}"))
    assert type(caught.value) is error
    assert caught.value.status == status


async def test_wrong_key_names_the_variable_and_never_the_key(upstream: Upstream) -> None:
    wrong = "sk-wrong-key-987"
    provider = OpenAIChat(client(upstream.base_url, api_key=wrong))
    try:
        with pytest.raises(
            ProviderNotConfigured, match="rejected the API key; set PARLEY_LLM_API_KEY"
        ) as caught:
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert wrong not in repr(caught.value.to_dict())
    assert caught.value.field == "PARLEY_LLM_API_KEY"


async def test_missing_key_says_one_is_required(upstream: Upstream) -> None:
    provider = OpenAIChat(client(upstream.base_url, api_key=None))
    try:
        with pytest.raises(ProviderNotConfigured, match="requires an API key; set PARLEY_LLM_API_KEY"):
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()


async def test_unknown_model_names_the_model_setting(upstream: Upstream) -> None:
    provider = OpenAIChat(client(upstream.base_url), model="gpt-99")
    try:
        with pytest.raises(ProviderNotConfigured, match="no model 'gpt-99'") as caught:
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert caught.value.field == "PARLEY_LLM_MODEL"
    assert caught.value.details["upstream_code"] == "model_not_found"


async def test_ollama_style_string_error_is_read(
    scripted: ScriptedUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.script(
        [b'{"error":"model \\"qwen9\\" not found, try pulling it first"}'],
        status=404,
        content_type=b"application/json",
    )
    provider = OpenAIChat(client(scripted.url, api_key=None), model="qwen9")
    try:
        with pytest.raises(ProviderNotConfigured) as caught:
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert 'model "qwen9" not found, try pulling it first' in caplog.text
    assert "pulling" not in str(caught.value.to_dict())


async def test_slow_answer_times_out(upstream: Upstream) -> None:
    provider = OpenAIChat(client(upstream.base_url, timeout=0.3))
    try:
        # The stand-in would answer after 5 s: a timeout error means the client gave up first.
        with pytest.raises(ProviderTimeout):
            await collect(provider, ask("#sleep:5"))
    finally:
        await provider.aclose()
    assert await wait_until(lambda: upstream.app.state.cancelled_streams == 1)


async def test_unreachable_server_is_unavailable() -> None:
    provider = OpenAIChat(
        client(f"http://127.0.0.1:{free_port()}/v1", base_url_setting="PARLEY_LLM_BASE_URL")
    )
    try:
        with pytest.raises(ProviderUnavailable, match="PARLEY_LLM_BASE_URL"):
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()


async def test_connection_dropped_midstream_is_unavailable(chat: OpenAIChat) -> None:
    got: list[str] = []
    with pytest.raises(ProviderUnavailable):
        async for delta in chat.stream(ask("a b c #fail-midstream")):
            got.append(delta.text)
    assert got == ["You", " said:"]


async def test_cancelling_the_consumer_closes_the_upstream_stream(keyless: Upstream) -> None:
    provider = OpenAIChat(client(keyless.base_url, api_key=None))
    two = asyncio.Event()
    got: list[ChatDelta] = []

    async def consume() -> None:
        async for delta in provider.stream(ask(" ".join(f"word{i}" for i in range(40)))):
            got.append(delta)
            if len(got) == 2:
                two.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(two.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_until(lambda: keyless.app.state.cancelled_streams == 1, within=1.0)
    finally:
        await provider.aclose()
    assert keyless.app.state.completed_streams == 0


# -- speech to text -------------------------------------------------------------------------------


async def test_transcription_is_a_multipart_upload(upstream: Upstream) -> None:
    stt = OpenAISTT(client(upstream.base_url))
    audio = AudioInput(b"OggS\x00\x02SAY:what time is it\x00", "audio/ogg", "clip.ogg")
    try:
        detected = await stt.transcribe(audio)
        told = await stt.transcribe(audio, language="es")
    finally:
        await stt.aclose()

    assert detected.text == told.text == "what time is it"
    assert (detected.language, told.language) == (None, "es")
    first, second = upstream.app.state.requests[-2:]
    assert first["path"] == "/v1/audio/transcriptions"
    assert first["form"] == {"model": "whisper-1", "response_format": "json"}
    assert first["file"] == {"filename": "clip.ogg", "content_type": "audio/ogg", "bytes": len(audio.data)}
    assert second["form"] == {"model": "whisper-1", "response_format": "json", "language": "es"}


@pytest.mark.parametrize(
    ("trigger", "error", "words"),
    [("401", ProviderNotConfigured, "PARLEY_STT_API_KEY"), ("429", ProviderRateLimited, "rate limiting")],
)
async def test_transcription_errors_map(
    upstream: Upstream, trigger: str, error: type[ParleyError], words: str
) -> None:
    stt = OpenAISTT(client(upstream.base_url, key_setting="PARLEY_STT_API_KEY"))
    try:
        with pytest.raises(error, match=words):
            await stt.transcribe(AudioInput(f"#error:{trigger}".encode()))
    finally:
        await stt.aclose()


async def test_unknown_transcription_model_names_the_stt_setting(upstream: Upstream) -> None:
    stt = OpenAISTT(client(upstream.base_url), model="whisper-9")
    try:
        with pytest.raises(ProviderNotConfigured, match="PARLEY_STT_MODEL"):
            await stt.transcribe(AudioInput(b"SAY:x"))
    finally:
        await stt.aclose()


async def test_slow_transcription_times_out(upstream: Upstream) -> None:
    stt = OpenAISTT(client(upstream.base_url, timeout=0.3))
    try:
        with pytest.raises(ProviderTimeout):
            await stt.transcribe(AudioInput(b"#sleep:3"))
    finally:
        await stt.aclose()


# -- the stand-in's own wire format ---------------------------------------------------------------


async def test_standin_speaks_openai_formats(upstream: Upstream) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=upstream.base_url, headers=auth) as http:
        models = await http.get("/models")
        plain = await http.post("/chat/completions", json=body)
        streamed = await http.post("/chat/completions", json=body | {"stream": True})
        text = await http.post(
            "/audio/transcriptions",
            files={"file": ("a.wav", b"SAY:yo")},
            data={"model": "whisper-1", "response_format": "text"},
        )
        anonymous = await http.get("/models", headers={"Authorization": ""})

    assert [m["id"] for m in models.json()["data"]] == ["gpt-4o-mini", "whisper-1", "llama3.2"]
    assert plain.json()["choices"][0]["message"] == {"role": "assistant", "content": "You said: hi"}
    assert plain.json()["object"] == "chat.completion"
    events = [line.removeprefix("data: ") for line in streamed.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert text.text == "yo"
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "invalid_request_error"
