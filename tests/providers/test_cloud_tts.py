"""WorkersAITTS (Aura, MeloTTS) and OpenAITTS against the stand-ins on real uvicorn, real audio both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.applications import Starlette

from parley.errors import (
    InvalidInput,
    ProviderError,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderUnavailable,
)
from parley.providers.factory import build_tts
from parley.providers.openai.client import OpenAIClient
from parley.providers.openai.tts import OpenAITTS
from parley.providers.tts import AudioChunk, TTSProvider
from parley.providers.workers_ai.client import WorkersAIClient
from parley.providers.workers_ai.tts import AURA_MODEL, MELOTTS_MODEL, WorkersAITTS
from parley.standins import openai as openai_standin
from parley.standins import workers_ai as workers_standin
from parley.standins.common import init_state
from parley.standins.server import BackgroundServer
from parley.standins.speech import speech_seconds
from tests.conftest import make_settings

ACCOUNT, TOKEN, KEY = "acct-1", "tok-1", "sk-1"
TEXT = "Good evening, this is a short test of the speech path."


@dataclass
class Upstream:
    app: Starlette
    url: str


@pytest.fixture(scope="module")
def _workers() -> Iterator[Upstream]:
    app = workers_standin.create_app(account_id=ACCOUNT, token=TOKEN)
    with BackgroundServer(app) as server:
        yield Upstream(app, server.url + "/client/v4")


@pytest.fixture(scope="module")
def _openai() -> Iterator[Upstream]:
    app = openai_standin.create_app(api_key=KEY)
    with BackgroundServer(app) as server:
        yield Upstream(app, server.url + "/v1")


@pytest.fixture
def workers(_workers: Upstream) -> Upstream:
    init_state(_workers.app.state)
    return _workers


@pytest.fixture
def openai(_openai: Upstream) -> Upstream:
    init_state(_openai.app.state)
    return _openai


@pytest.fixture
async def providers() -> AsyncIterator[list[TTSProvider]]:
    """Providers a test built; closed afterwards so no connection outlives the test."""
    made: list[TTSProvider] = []
    yield made
    for provider in made:
        await provider.aclose()


def workers_tts(
    upstream: Upstream, made: list[TTSProvider], token: str | None = TOKEN, **kw: str
) -> WorkersAITTS:
    client = WorkersAIClient(account_id=ACCOUNT, api_token=token, base_url=upstream.url, timeout=10)
    made.append(provider := WorkersAITTS(client, **kw))
    return provider


def openai_tts(upstream: Upstream, made: list[TTSProvider], key: str = KEY, **kw: str) -> OpenAITTS:
    client = OpenAIClient(base_url=upstream.url, api_key=key, timeout=10, key_setting="PARLEY_TTS_API_KEY")
    made.append(provider := OpenAITTS(client, **kw))  # type: ignore[arg-type]
    return provider


async def collect(provider: TTSProvider, text: str = TEXT, **kw: str) -> list[AudioChunk]:
    return [chunk async for chunk in provider.synthesize(text, **kw)]


def seconds(chunks: list[AudioChunk]) -> float:
    return sum(c.duration for c in chunks)


async def test_aura_asks_for_wav_and_streams_it(workers: Upstream, providers: list[TTSProvider]) -> None:
    chunks = await collect(workers_tts(workers, providers), voice="luna")
    assert seconds(chunks) == pytest.approx(speech_seconds(TEXT), abs=0.01)
    assert {c.sample_rate for c in chunks} == {24000}
    sent = workers.app.state.requests[-1]
    assert sent["model"] == AURA_MODEL
    assert sent["json"] == {
        "text": TEXT,
        "speaker": "luna",
        "encoding": "linear16",
        "container": "wav",
        "sample_rate": 24000,
    }


async def test_aura_default_speaker_is_angus(workers: Upstream, providers: list[TTSProvider]) -> None:
    await collect(workers_tts(workers, providers))
    assert workers.app.state.requests[-1]["json"]["speaker"] == "angus"


async def test_melotts_base64_mp3_is_decoded(workers: Upstream, providers: list[TTSProvider]) -> None:
    chunks = await collect(workers_tts(workers, providers, model=MELOTTS_MODEL), language="ja-JP")
    # MP3 frames pad the end by up to ~50 ms.
    assert seconds(chunks) == pytest.approx(speech_seconds(TEXT), abs=0.06)
    assert workers.app.state.requests[-1]["json"] == {"prompt": TEXT, "lang": "jp"}


async def test_melotts_raw_mpeg_answer_is_decoded_too(
    workers: Upstream, providers: list[TTSProvider]
) -> None:
    text = TEXT + " #raw"
    chunks = await collect(workers_tts(workers, providers, model=MELOTTS_MODEL), text)
    assert seconds(chunks) == pytest.approx(speech_seconds(text), abs=0.06)


async def test_melotts_refuses_a_language_it_lacks(workers: Upstream, providers: list[TTSProvider]) -> None:
    with pytest.raises(InvalidInput) as caught:
        await collect(workers_tts(workers, providers, model=MELOTTS_MODEL), language="de")
    assert caught.value.field == "language"
    assert workers.app.state.requests == []


async def test_workers_ai_errors_are_translated(
    workers: Upstream, providers: list[TTSProvider], caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ProviderRateLimited):
        await collect(workers_tts(workers, providers), "#error:3040")
    with pytest.raises(ProviderError, match="error 5006") as refused:
        await collect(workers_tts(workers, providers), voice="nobody")
    # Cloudflare's own words go to the log, not into the error that clients see
    assert "speaker" not in refused.value.message and "speaker must be one of" in caplog.text
    with pytest.raises(ProviderNotConfigured) as caught:
        await collect(workers_tts(workers, providers, token="wrong"))
    assert caught.value.field == "CLOUDFLARE_API_TOKEN"
    with pytest.raises(ProviderNotConfigured) as caught:
        await collect(workers_tts(workers, providers, token=None))
    assert caught.value.field == "CLOUDFLARE_API_TOKEN"


@pytest.mark.parametrize("response_format", ["wav", "pcm"])
async def test_openai_speech_in_both_formats(
    response_format: str, openai: Upstream, providers: list[TTSProvider]
) -> None:
    provider = openai_tts(openai, providers, response_format=response_format, voice="nova")
    chunks = await collect(provider)
    assert seconds(chunks) == pytest.approx(speech_seconds(TEXT), abs=0.01)
    assert {c.sample_rate for c in chunks} == {24000}
    assert all(len(c.pcm) % 2 == 0 for c in chunks)
    sent = openai.app.state.requests[-1]
    assert sent["path"] == "/v1/audio/speech" and sent["authorized"]
    assert sent["json"] == {
        "model": "tts-1",
        "input": TEXT,
        "voice": "nova",
        "response_format": response_format,
    }


async def test_openai_call_voice_wins_and_defaults_are_tts1_alloy(
    openai: Upstream, providers: list[TTSProvider]
) -> None:
    provider = openai_tts(openai, providers)
    await collect(provider)
    assert openai.app.state.requests[-1]["json"]["voice"] == "alloy"
    await collect(provider, voice="echo")
    assert openai.app.state.requests[-1]["json"]["voice"] == "echo"


async def test_openai_errors_are_translated(
    openai: Upstream, providers: list[TTSProvider], caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ProviderNotConfigured) as caught:
        await collect(openai_tts(openai, providers, key="bad"))
    assert caught.value.field == "PARLEY_TTS_API_KEY"
    with pytest.raises(ProviderNotConfigured) as caught:
        await collect(openai_tts(openai, providers, model="no-such-tts"))
    assert caught.value.field == "PARLEY_TTS_MODEL"
    with pytest.raises(ProviderUnavailable):
        await collect(openai_tts(openai, providers), "#error:503")
    with pytest.raises(ProviderError, match="HTTP 400") as refused:
        await collect(openai_tts(openai, providers, voice="robot"))
    # the upstream's words go to the log, not into the error that clients see
    assert "robot" not in refused.value.message and "Invalid voice 'robot'" in caplog.text


async def test_empty_text_sends_nothing(openai: Upstream, providers: list[TTSProvider]) -> None:
    assert await collect(openai_tts(openai, providers), "  ") == []
    assert openai.app.state.requests == []


async def test_tts_model_setting_picks_the_openai_speech_model(openai: Upstream, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, tts="openai", llm_base_url=openai.url, llm_api_key=KEY, tts_model="tts-1-hd"
    )
    provider = build_tts(settings)
    try:
        chunks = await collect(provider)
    finally:
        await provider.aclose()
    assert seconds(chunks) == pytest.approx(speech_seconds(TEXT), abs=0.01)
    assert [r["model"] for r in openai.app.state.requests] == ["tts-1-hd"]
