"""How settings pick providers, and that the picked providers work end to end against the stand-ins."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from parley.config import Settings
from parley.errors import ProviderNotConfigured
from parley.providers.factory import build_chat, build_stt, describe_choice
from parley.providers.llm import ChatMessage, ChatProvider, ChatRequest
from parley.providers.openai import OpenAIChat, OpenAISTT
from parley.providers.stt import AudioInput, STTProvider
from parley.providers.unconfigured import UnconfiguredChat, UnconfiguredSTT
from parley.providers.workers_ai import WorkersAIChat, WorkersAISTT
from parley.standins import openai as openai_standin
from parley.standins import workers_ai as workers_ai_standin
from parley.standins.server import BackgroundServer

CF = {"cloudflare_account_id": "acct-9", "cloudflare_api_token": "cf-secret-token"}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read the process environment; these tests must see only what they pass.
    for name in list(os.environ):
        if name.upper().startswith(("PARLEY_", "CLOUDFLARE_")):
            monkeypatch.delenv(name)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def built() -> AsyncIterator[list[ChatProvider | STTProvider]]:
    """Providers a test builds, closed afterwards (they own HTTP clients)."""
    providers: list[ChatProvider | STTProvider] = []
    yield providers
    for provider in providers:
        await provider.aclose()


def pick(built: list[ChatProvider | STTProvider], config: Settings) -> tuple[ChatProvider, STTProvider]:
    chat, stt = build_chat(config), build_stt(config)
    built.extend([chat, stt])
    return chat, stt


async def test_nothing_configured_gives_unconfigured_providers(built: list[Any]) -> None:
    chat, stt = pick(built, settings())
    assert type(chat) is UnconfiguredChat and type(stt) is UnconfiguredSTT
    lines = describe_choice(settings())
    assert lines[0].startswith("chat: none, because no model service is configured")
    assert "CLOUDFLARE_ACCOUNT_ID" in lines[0] and "PARLEY_LLM_BASE_URL" in lines[0]


async def test_cloudflare_credentials_pick_workers_ai_with_default_models(built: list[Any]) -> None:
    config = settings(**CF, provider_timeout=7.5, workers_ai_base_url="http://127.0.0.1:9/client/v4")
    chat, stt = pick(built, config)
    assert isinstance(chat, WorkersAIChat) and isinstance(stt, WorkersAISTT)
    assert chat.model == "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
    assert stt.model == "@cf/openai/whisper"
    assert chat.client.timeout == stt.client.timeout == 7.5
    assert chat.client.base_url == "http://127.0.0.1:9/client/v4"
    assert describe_choice(config)[0].startswith(
        "chat: workers-ai, model @cf/meta/llama-3.3-70b-instruct-fp8-fast, because CLOUDFLARE_ACCOUNT_ID and"
    )


async def test_workers_ai_wins_over_a_base_url_when_nothing_is_explicit(built: list[Any]) -> None:
    chat, stt = pick(built, settings(**CF, llm_base_url="http://127.0.0.1:11434/v1"))
    assert isinstance(chat, WorkersAIChat) and isinstance(stt, WorkersAISTT)


async def test_half_the_cloudflare_credentials_do_not_pick_workers_ai(built: list[Any]) -> None:
    config = settings(cloudflare_account_id="acct-9")
    chat, _ = pick(built, config)
    assert type(chat) is UnconfiguredChat
    assert "chat: note: Workers AI was not picked because CLOUDFLARE_API_TOKEN is unset" in describe_choice(
        config
    )


async def test_base_url_picks_openai_for_chat_and_speech(built: list[Any]) -> None:
    config = settings(llm_base_url="http://127.0.0.1:11434/v1", llm_model="llama3.2", llm_api_key="k-llm")
    chat, stt = pick(built, config)
    assert isinstance(chat, OpenAIChat) and isinstance(stt, OpenAISTT)
    assert (chat.model, chat.client.base_url) == ("llama3.2", "http://127.0.0.1:11434/v1")
    assert (stt.model, stt.client.base_url, stt.client.key_setting) == (
        "whisper-1",
        "http://127.0.0.1:11434/v1",
        "PARLEY_LLM_API_KEY",
    )
    assert describe_choice(config)[0] == (
        "chat: openai, model llama3.2 at http://127.0.0.1:11434/v1, because PARLEY_LLM_BASE_URL is set"
    )


async def test_speech_settings_override_the_chat_server(built: list[Any]) -> None:
    config = settings(
        llm_base_url="http://127.0.0.1:11434/v1",
        stt_base_url="http://127.0.0.1:8000/v1",
        stt_api_key="k-stt",
        stt_model="Systran/faster-whisper-small",
    )
    _, stt = pick(built, config)
    assert isinstance(stt, OpenAISTT)
    assert (stt.client.base_url, stt.client.key_setting, stt.client.base_url_setting) == (
        "http://127.0.0.1:8000/v1",
        "PARLEY_STT_API_KEY",
        "PARLEY_STT_BASE_URL",
    )
    assert stt.model == "Systran/faster-whisper-small"
    assert "because PARLEY_STT_BASE_URL is set" in describe_choice(config)[1]


async def test_explicit_choice_wins_over_credentials(built: list[Any]) -> None:
    config = settings(**CF, llm="openai", stt="none")
    chat, stt = pick(built, config)
    assert isinstance(chat, OpenAIChat) and chat.client.base_url == "https://api.openai.com/v1"
    assert type(stt) is UnconfiguredSTT
    lines = describe_choice(config)
    assert (
        "chat: openai, model gpt-4o-mini at https://api.openai.com/v1, because PARLEY_LLM=openai" in lines[0]
    )
    assert "chat: warning: api.openai.com needs an API key; set PARLEY_LLM_API_KEY" in lines
    assert "speech-to-text: off, because PARLEY_STT=none" in lines


async def test_explicit_none_turns_chat_off(built: list[Any]) -> None:
    chat, _ = pick(built, settings(**CF, llm="none"))
    with pytest.raises(ProviderNotConfigured, match="PARLEY_LLM=none"):
        async for _ in chat.stream(ChatRequest([ChatMessage("user", "hi")])):
            pass


async def test_explicit_workers_ai_without_token_still_builds_and_says_what_to_set(built: list[Any]) -> None:
    config = settings(llm="workers-ai", stt="workers-ai", cloudflare_account_id="acct-9")
    chat, stt = pick(built, config)
    assert isinstance(chat, WorkersAIChat) and isinstance(stt, WorkersAISTT)
    with pytest.raises(ProviderNotConfigured, match="CLOUDFLARE_API_TOKEN"):
        async for _ in chat.stream(ChatRequest([ChatMessage("user", "hi")])):
            pass
    with pytest.raises(ProviderNotConfigured, match="CLOUDFLARE_API_TOKEN"):
        await stt.transcribe(AudioInput(b"x"))
    assert "chat: warning: CLOUDFLARE_API_TOKEN not set; every call fails until it is" in describe_choice(
        config
    )


def test_descriptions_never_contain_secrets() -> None:
    config = settings(**CF, llm="openai", llm_api_key="sk-very-secret", stt_api_key="sk-stt-secret")
    text = "\n".join(describe_choice(config))
    for secret in ("cf-secret-token", "sk-very-secret", "sk-stt-secret"):
        assert secret not in text


def test_vendors_are_imported_only_when_picked() -> None:
    code = (
        "import sys, parley.providers.factory as f, parley.config as c;"
        "f.build_chat(c.Settings(_env_file=None));"
        "vendors = ('parley.providers.workers_ai', 'parley.providers.openai');"
        "print(sorted(m for m in sys.modules if m.startswith(vendors)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PARLEY_", "CLOUDFLARE_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


# -- end to end: settings -> factory -> stand-in ----------------------------------------------------


@pytest.fixture(scope="module")
def workers_ai_url() -> Iterator[str]:
    app = workers_ai_standin.create_app(account_id="acct-9", token="cf-secret-token")
    with BackgroundServer(app) as server:
        yield server.url + "/client/v4"


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    with BackgroundServer(openai_standin.create_app(api_key="sk-k")) as server:
        yield server.url + "/v1"


async def test_built_workers_ai_providers_talk_to_the_standin(built: list[Any], workers_ai_url: str) -> None:
    config = settings(**CF, workers_ai_base_url=workers_ai_url, stt_model="@cf/openai/whisper-large-v3-turbo")
    chat, stt = pick(built, config)
    reply = [d.text async for d in chat.stream(ChatRequest([ChatMessage("user", "ping")]))]
    assert "".join(reply) == "You said: ping"
    transcript = await stt.transcribe(AudioInput(b"SAY:hola"), language="es")
    assert (transcript.text, transcript.language) == ("hola", "es")


async def test_built_openai_providers_talk_to_the_standin(built: list[Any], openai_url: str) -> None:
    chat, stt = pick(built, settings(llm_base_url=openai_url, llm_api_key="sk-k"))
    reply = [d.text async for d in chat.stream(ChatRequest([ChatMessage("user", "ping")]))]
    assert "".join(reply) == "You said: ping"
    assert (await stt.transcribe(AudioInput(b"SAY:hello"))).text == "hello"
