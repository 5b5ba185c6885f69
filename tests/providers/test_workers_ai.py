"""WorkersAIChat and WorkersAISTT against the Workers AI stand-in (and scripted upstreams) over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette

from parley.errors import (
    ParleyError,
    PayloadTooLarge,
    ProviderError,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from parley.providers.http import UpstreamConnectError, UpstreamTimeout
from parley.providers.llm import ChatDelta, ChatMessage, ChatRequest, Usage
from parley.providers.stt import AudioInput
from parley.providers.workers_ai import WorkersAIChat, WorkersAIClient, WorkersAISTT
from parley.standins.common import init_state
from parley.standins.server import BackgroundServer, free_port
from parley.standins.workers_ai import create_app

from .conftest import ScriptedUpstream, cut, wait_until

ACCOUNT = "acct-0123"
TOKEN = "tok-s3cret-value"
TURBO = "@cf/openai/whisper-large-v3-turbo"


@dataclass
class Upstream:
    app: Starlette
    base_url: str


def _serve(*, doubled: bool = False, token_interval: float = 0.0) -> Iterator[Upstream]:
    app = create_app(account_id=ACCOUNT, token=TOKEN, doubled=doubled, token_interval=token_interval)
    with BackgroundServer(app) as server:
        yield Upstream(app, server.url + "/client/v4")


@pytest.fixture(scope="module")
def _plain() -> Iterator[Upstream]:
    yield from _serve()


@pytest.fixture(scope="module")
def _doubled() -> Iterator[Upstream]:
    yield from _serve(doubled=True)


@pytest.fixture(scope="module")
def _slow() -> Iterator[Upstream]:
    yield from _serve(token_interval=0.05)


@pytest.fixture
def upstream(_plain: Upstream) -> Upstream:
    init_state(_plain.app.state)
    return _plain


@pytest.fixture
def slow(_slow: Upstream) -> Upstream:
    init_state(_slow.app.state)
    return _slow


def client(
    base_url: str, *, token: str | None = TOKEN, account: str | None = ACCOUNT, timeout: float = 5.0
) -> WorkersAIClient:
    return WorkersAIClient(account_id=account, api_token=token, base_url=base_url, timeout=timeout)


@pytest.fixture
async def chat(upstream: Upstream) -> AsyncIterator[WorkersAIChat]:
    provider = WorkersAIChat(client(upstream.base_url))
    yield provider
    await provider.aclose()


def ask(text: str, *, max_tokens: int = 512, temperature: float | None = None) -> ChatRequest:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", text)]
    return ChatRequest(messages, max_tokens=max_tokens, temperature=temperature)


async def collect(provider: WorkersAIChat, request: ChatRequest) -> list[ChatDelta]:
    return [delta async for delta in provider.stream(request)]


def text_of(deltas: list[ChatDelta]) -> str:
    return "".join(d.text for d in deltas)


# -- streaming ------------------------------------------------------------------------------------


async def test_consecutive_streams_reuse_one_connection(chat: WorkersAIChat, upstream: Upstream) -> None:
    for i in range(4):
        assert text_of(await collect(chat, ask(f"turn {i}"))) == f"You said: turn {i}"
    ports = {r["client_port"] for r in upstream.app.state.requests}
    assert len(ports) == 1  # reading past [DONE] to the end of the body lets httpx keep it alive


async def test_streams_tokens_through_padding_and_ends_with_usage(
    chat: WorkersAIChat, upstream: Upstream
) -> None:
    deltas = await collect(chat, ask("hello there"))

    assert [d.text for d in deltas[:-1]] == ["You", " said:", " hello", " there"]
    assert deltas[-1] == ChatDelta(usage=Usage(prompt_tokens=4, completion_tokens=4, total_tokens=8))
    sent = upstream.app.state.requests[-1]
    assert sent["path"] == f"/client/v4/accounts/{ACCOUNT}/ai/run/@cf/meta/llama-3.3-70b-instruct-fp8-fast"
    assert sent["json"] == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
        "max_tokens": 512,
        "stream": True,
    }
    assert sent["authorized"]
    assert await wait_until(lambda: upstream.app.state.completed_streams == 1)
    assert upstream.app.state.cancelled_streams == 0


async def test_sends_temperature_and_max_tokens_only_as_asked(
    chat: WorkersAIChat, upstream: Upstream
) -> None:
    deltas = await collect(chat, ask("one two three four", max_tokens=3, temperature=0.2))

    assert text_of(deltas) == "You said: one"
    assert upstream.app.state.requests[-1]["json"]["temperature"] == 0.2
    assert upstream.app.state.requests[-1]["json"]["max_tokens"] == 3


async def test_doubled_token_fields_are_read_once(_doubled: Upstream) -> None:
    provider = WorkersAIChat(client(_doubled.base_url))
    try:
        deltas = await collect(provider, ask("no echo please"))
    finally:
        await provider.aclose()
    assert text_of(deltas) == "You said: no echo please"


async def test_unicode_line_separator_inside_a_token_survives(chat: WorkersAIChat) -> None:
    # The stand-in writes U+2028 raw inside the JSON, as JSON.stringify does; a line splitter
    # that follows str.splitlines() would cut the event in two.
    deltas = await collect(chat, ask("one\u2028two\u0085three"))
    assert text_of(deltas) == "You said: one\u2028two\u0085three"


async def test_events_split_across_network_chunks(scripted: ScriptedUpstream) -> None:
    events = [
        b": keep-alive comment\r\n\r\n",
        'data: {"response":"Caf\u00e9","p":"xyz"}\r\n\r\n'.encode(),
        'data: {"response":" \u2615","p":"abcdefghij"}\n\n'.encode(),
        b'data: {"choices":[{"index":0,"delta":{"content":" only-choices"}}]}\n\n',
        b'data: {"response":" twice","choices":[{"delta":{"content":" twice"}}],"p":"q"}\r\r',
        b'data: {"response":"","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\n',
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(events)
    cup = stream.index("\u2615".encode())
    crlf = stream.index(b"\r\n")
    pieces = cut(stream, cup + 1, cup + 2, crlf + 1, stream.index(b"data:") + 2)
    assert any(a.endswith(b"\r") and b.startswith(b"\n") for a, b in itertools.pairwise(pieces))
    scripted.script(pieces)
    provider = WorkersAIChat(client(scripted.url))
    try:
        deltas = await collect(provider, ask("hi"))
    finally:
        await provider.aclose()

    assert [d.text for d in deltas[:-1]] == ["Caf\u00e9", " \u2615", " only-choices", " twice"]
    assert deltas[-1].usage == Usage(3, 4, 7)


async def test_json_envelope_answer_is_accepted_whole(scripted: ScriptedUpstream) -> None:
    body = {"result": {"response": "whole reply", "usage": {"prompt_tokens": 1, "completion_tokens": 2}}}
    scripted.script([json.dumps(body).encode()], content_type=b"application/json")
    provider = WorkersAIChat(client(scripted.url))
    try:
        deltas = await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert deltas == [ChatDelta(text="whole reply"), ChatDelta(usage=Usage(1, 2, 3))]


@pytest.mark.parametrize(
    ("event", "error", "words"),
    [
        (
            b'{"errors":[{"code":3040,"message":"Capacity temporarily exceeded"}]}',
            ProviderRateLimited,
            "capacity",
        ),
        (
            b'{"error":"InferenceUpstreamError: model crashed"}',
            ProviderError,
            "error while writing the reply",
        ),
    ],
)
async def test_error_inside_the_stream_is_raised(
    scripted: ScriptedUpstream, event: bytes, error: type[ProviderError], words: str
) -> None:
    scripted.script([b'data: {"response":"Hel"}\n\n', b"data: " + event + b"\n\n"])
    provider = WorkersAIChat(client(scripted.url))
    got: list[ChatDelta] = []
    try:
        with pytest.raises(error, match=words) as caught:
            async for delta in provider.stream(ask("hi")):
                got.append(delta)
    finally:
        await provider.aclose()
    assert type(caught.value) is error
    assert got == [ChatDelta(text="Hel")]


async def test_stream_that_ends_without_done_is_an_error(scripted: ScriptedUpstream) -> None:
    scripted.script([b'data: {"response":"Hel"}\n\n'])
    provider = WorkersAIChat(client(scripted.url))
    try:
        with pytest.raises(ProviderUnavailable, match="before the reply was complete"):
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()


async def test_connection_dropped_midstream_is_unavailable(chat: WorkersAIChat) -> None:
    got: list[str] = []
    with pytest.raises(ProviderUnavailable):
        async for delta in chat.stream(ask("a b c d #fail-midstream")):
            got.append(delta.text)
    assert got == ["You", " said:"]


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "upstream_status", "error", "status", "words"),
    [
        (3036, 429, ProviderRateLimited, 429, "resets at 00:00 UTC"),
        (3040, 429, ProviderRateLimited, 429, "retry later"),
        (3007, 408, ProviderTimeout, 504, "timed out"),
        (3006, 413, PayloadTooLarge, 413, "too large"),
        (5007, 400, ProviderNotConfigured, 503, "PARLEY_LLM_MODEL"),
        (3042, 404, ProviderNotConfigured, 503, "PARLEY_LLM_MODEL"),
        (5016, 403, ProviderNotConfigured, 503, "PARLEY_LLM_MODEL"),
        (9999, 500, ProviderError, 502, "error 9999"),
    ],
)
async def test_error_codes_map_to_parley_errors(
    chat: WorkersAIChat, code: int, upstream_status: int, error: type[ParleyError], status: int, words: str
) -> None:
    with pytest.raises(error, match=words) as caught:
        await collect(chat, ask(f"please #error:{code}"))
    assert type(caught.value) is error
    assert caught.value.status == status
    assert caught.value.details["upstream_status"] == upstream_status
    assert caught.value.details["upstream_code"] == code


async def test_quota_message_is_the_documented_one(chat: WorkersAIChat) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        await collect(chat, ask("#error:3036"))
    assert caught.value.message == "Workers AI daily free allocation used up; quota resets at 00:00 UTC"
    assert caught.value.retryable


async def test_unknown_model_names_the_model_setting(upstream: Upstream) -> None:
    provider = WorkersAIChat(client(upstream.base_url), model="@cf/nobody/nothing")
    try:
        with pytest.raises(ProviderNotConfigured, match="PARLEY_LLM_MODEL") as caught:
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert caught.value.field == "PARLEY_LLM_MODEL"
    assert "@cf/nobody/nothing" in caught.value.message


async def test_wrong_token_names_the_variable_and_never_the_token(upstream: Upstream) -> None:
    wrong = "wrong-token-value-42"
    provider = WorkersAIChat(client(upstream.base_url, token=wrong))
    try:
        with pytest.raises(ProviderNotConfigured) as caught:
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert caught.value.field == "CLOUDFLARE_API_TOKEN"
    assert "CLOUDFLARE_API_TOKEN" in caught.value.message
    assert wrong not in repr(caught.value.to_dict()) and TOKEN not in repr(caught.value.to_dict())
    assert caught.value.details["upstream_code"] == 10000


async def test_unknown_account_names_the_account_variable(upstream: Upstream) -> None:
    provider = WorkersAIChat(client(upstream.base_url, account="someone-else"))
    try:
        with pytest.raises(ProviderNotConfigured, match="CLOUDFLARE_ACCOUNT_ID"):
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("account", "token", "missing"),
    [
        (None, TOKEN, "CLOUDFLARE_ACCOUNT_ID"),
        (ACCOUNT, None, "CLOUDFLARE_API_TOKEN"),
        ("", "", "CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN"),
    ],
)
async def test_missing_credentials_fail_on_first_call_without_a_request(
    upstream: Upstream, account: str | None, token: str | None, missing: str
) -> None:
    provider = WorkersAIChat(client(upstream.base_url, account=account, token=token))
    stt = WorkersAISTT(client(upstream.base_url, account=account, token=token))
    try:
        with pytest.raises(ProviderNotConfigured, match=missing):
            await collect(provider, ask("hi"))
        with pytest.raises(ProviderNotConfigured, match=missing):
            await stt.transcribe(AudioInput(b"SAY:hi"))
    finally:
        await provider.aclose()
        await stt.aclose()
    assert upstream.app.state.requests == []


async def test_slow_first_token_times_out(upstream: Upstream) -> None:
    provider = WorkersAIChat(client(upstream.base_url, timeout=0.3))
    try:
        # The stand-in would answer after 5 s: a timeout error means the client gave up first.
        with pytest.raises(ProviderTimeout) as caught:
            await collect(provider, ask("#sleep:5 hi"))
    finally:
        await provider.aclose()
    assert caught.value.status == 504
    assert isinstance(caught.value.__cause__, UpstreamTimeout)
    # Giving up must also stop the stand-in's generation.
    assert await wait_until(lambda: upstream.app.state.cancelled_streams == 1)


async def test_unreachable_server_is_unavailable() -> None:
    provider = WorkersAIChat(client(f"http://127.0.0.1:{free_port()}/client/v4"))
    try:
        with pytest.raises(ProviderUnavailable, match="Cannot reach Workers AI") as caught:
            await collect(provider, ask("hi"))
    finally:
        await provider.aclose()
    assert isinstance(caught.value.__cause__, UpstreamConnectError)


# -- cancellation ---------------------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_upstream_stream(slow: Upstream) -> None:
    provider = WorkersAIChat(client(slow.base_url))
    got: list[ChatDelta] = []
    two = asyncio.Event()

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
        # The whole reply would take ~2 s; the stand-in must notice well before it ends.
        assert await wait_until(lambda: slow.app.state.cancelled_streams == 1, within=1.0)
    finally:
        await provider.aclose()
    assert slow.app.state.completed_streams == 0
    assert len(got) < 5


async def test_a_stream_read_to_the_end_is_not_counted_as_cancelled(slow: Upstream) -> None:
    provider = WorkersAIChat(client(slow.base_url))
    try:
        await collect(provider, ask("short"))
    finally:
        await provider.aclose()
    assert await wait_until(lambda: slow.app.state.completed_streams == 1)
    assert slow.app.state.cancelled_streams == 0
    assert len(slow.app.state.first_byte_times) == 1


# -- speech to text -------------------------------------------------------------------------------


@pytest.fixture
async def whisper(upstream: Upstream) -> AsyncIterator[WorkersAISTT]:
    provider = WorkersAISTT(client(upstream.base_url))
    yield provider
    await provider.aclose()


@pytest.fixture
async def turbo(upstream: Upstream) -> AsyncIterator[WorkersAISTT]:
    provider = WorkersAISTT(client(upstream.base_url), model=TURBO)
    yield provider
    await provider.aclose()


async def test_whisper_posts_raw_bytes(whisper: WorkersAISTT, upstream: Upstream) -> None:
    audio = b"RIFF\x00\x01\x02WAVEfmt SAY:turn on the lights\x00\xff"
    transcript = await whisper.transcribe(AudioInput(audio, "audio/wav"), language="de")

    assert transcript.text == "turn on the lights"
    assert transcript.language is None  # this model takes no language and reports none
    sent = upstream.app.state.requests[-1]
    assert sent["path"].endswith("/ai/run/@cf/openai/whisper")
    assert sent["bytes"] == len(audio)
    assert sent["headers"]["content-type"] == "application/octet-stream"


async def test_whisper_without_marker_describes_the_audio(whisper: WorkersAISTT) -> None:
    assert (await whisper.transcribe(AudioInput(bytes(640)))).text == "audio of 640 bytes"


async def test_turbo_sends_base64_json_and_no_language_unless_given(
    turbo: WorkersAISTT, upstream: Upstream
) -> None:
    audio = b"\x00\x10SAY:bonjour tout le monde\x00" + bytes(32000)
    detected = await turbo.transcribe(AudioInput(audio))
    sent = upstream.app.state.requests[-1]["json"]
    assert sent == {"task": "transcribe"}  # the stand-in records the body minus the audio
    assert upstream.app.state.requests[-1]["audio_bytes"] == len(audio)
    assert detected.text == "bonjour tout le monde"
    assert detected.language == "en"  # the service's documented default
    assert detected.duration == pytest.approx(len(audio) / 32000, abs=0.01)

    french = await turbo.transcribe(AudioInput(audio), language="fr")
    assert upstream.app.state.requests[-1]["json"] == {"task": "transcribe", "language": "fr"}
    assert french.language == "fr"


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (5007, ProviderNotConfigured, "PARLEY_STT_MODEL"),
        (3006, PayloadTooLarge, "too large"),
        (3036, ProviderRateLimited, "00:00 UTC"),
    ],
)
async def test_whisper_errors_map_too(
    whisper: WorkersAISTT, turbo: WorkersAISTT, code: int, error: type[ParleyError], words: str
) -> None:
    for provider in (whisper, turbo):
        with pytest.raises(error, match=words):
            await provider.transcribe(AudioInput(f"#error:{code}".encode()))


async def test_slow_transcription_times_out(upstream: Upstream) -> None:
    provider = WorkersAISTT(client(upstream.base_url, timeout=0.3))
    try:
        with pytest.raises(ProviderTimeout):
            await provider.transcribe(AudioInput(b"#sleep:3 SAY:late"))
    finally:
        await provider.aclose()


# -- the stand-in's own wire format ---------------------------------------------------------------


async def test_standin_answers_the_documented_envelopes(upstream: Upstream) -> None:
    run = f"{upstream.base_url}/accounts/{ACCOUNT}/ai/run/"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient() as http:
        plain = await http.post(
            run + "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
            headers=auth,
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        as_list = await http.post(run + "@cf/openai/whisper", headers=auth, json={"audio": list(b"SAY:ok")})
        turbo = await http.post(run + TURBO, headers=auth, json={"audio": base64.b64encode(b"x").decode()})
        denied = await http.post(run + "@cf/openai/whisper", content=b"x")

    assert plain.json() == {
        "result": {
            "response": "You said: hi",
            "tool_calls": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
        },
        "success": True,
        "errors": [],
        "messages": [],
    }
    assert as_list.json()["result"] == {"text": "ok", "word_count": 1, "words": [], "vtt": ""}
    assert set(turbo.json()["result"]) == {"text", "word_count", "vtt", "segments", "transcription_info"}
    assert denied.status_code == 401
    assert denied.json() == {
        "success": False,
        "errors": [{"code": 10000, "message": "Authentication error"}],
        "messages": [],
        "result": None,
    }
