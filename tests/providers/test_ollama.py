"""Ollama: detection through `/api/tags` and chat through `/v1`, against a local stand-in."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from parley.config import Settings
from parley.errors import ProviderNotConfigured, ProviderUnavailable
from parley.providers import ollama
from parley.providers.factory import build_chat, describe_choice
from parley.providers.llm import ChatMessage, ChatRequest
from parley.providers.ollama.chat import OllamaChat, ollama_client
from parley.standins.server import BackgroundServer, free_port
from tests.providers.ollama_standin import create_app


def settings(**values: Any) -> Settings:
    base: dict[str, Any] = {"cloudflare_account_id": None, "cloudflare_api_token": None}
    return Settings(_env_file=None, **(base | values))  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def running() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app()) as server:
        yield server


@pytest.fixture(scope="module")
def empty() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(models=())) as server:
        yield server


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def reply(chat: OllamaChat, text: str = "ping") -> str:
    return "".join([d.text async for d in chat.stream(ChatRequest([ChatMessage("user", text)]))])


@pytest.fixture
async def chats() -> AsyncIterator[list[OllamaChat]]:
    made: list[OllamaChat] = []
    yield made
    for chat in made:
        await chat.aclose()


def test_check_lists_the_pulled_models(running: BackgroundServer) -> None:
    found = ollama.check(settings(ollama_url=running.url))
    assert found.usable
    assert found.reason == f"Ollama runs at {running.url} with llama3.2:latest, qwen2.5:0.5b"


def test_check_without_ollama_is_quick_and_names_the_setting() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    found = ollama.check(settings(ollama_url=url))  # refused at once: no timeout to wait for
    assert not found.usable
    assert found.reason == f"no Ollama answers at {url} (PARLEY_OLLAMA_URL)"


def test_check_gives_up_on_a_server_that_never_answers(silent: str) -> None:
    # The server never answers: without its own timeout the check would not return at all.
    found = ollama.check(settings(ollama_url=silent))
    assert not found.usable


def test_check_with_nothing_pulled_says_how_to_pull(empty: BackgroundServer) -> None:
    found = ollama.check(settings(ollama_url=empty.url))
    assert not found.usable
    assert "has no models pulled; run `ollama pull llama3.2`" in found.reason


def test_check_with_a_model_that_is_not_pulled(running: BackgroundServer) -> None:
    assert ollama.check(settings(ollama_url=running.url, llm_model="llama3.2")).usable
    missing = ollama.check(settings(ollama_url=running.url, llm_model="mistral"))
    assert not missing.usable
    assert "run `ollama pull mistral`" in missing.reason


def test_model_names_tolerates_odd_answers() -> None:
    assert ollama.model_names({"models": [{"model": "a:1"}, {"name": ""}, "x", {"name": 3}]}) == ["a:1"]
    assert ollama.model_names([]) == ollama.model_names({"models": None}) == []


async def test_chat_defaults_to_the_first_pulled_model(
    running: BackgroundServer, chats: list[OllamaChat]
) -> None:
    chat = OllamaChat(ollama_client(running.url), ollama_url=running.url)
    chats.append(chat)
    assert chat.model == ""
    assert await reply(chat, "hello there") == "You said: hello there"
    assert chat.model == "llama3.2:latest"
    sent = running.app.state.v1.requests[-1]
    assert (sent["path"], sent["model"], sent["authorized"]) == (
        "/v1/chat/completions",
        "llama3.2:latest",
        False,
    )


async def test_chat_uses_the_named_model(running: BackgroundServer, chats: list[OllamaChat]) -> None:
    chat = OllamaChat(ollama_client(running.url), ollama_url=running.url, model="qwen2.5:0.5b")
    chats.append(chat)
    before = running.app.state.tags_requests
    assert await reply(chat) == "You said: ping"
    assert running.app.state.tags_requests == before  # no lookup when the model is named
    assert running.app.state.v1.requests[-1]["model"] == "qwen2.5:0.5b"


async def test_chat_with_nothing_pulled_says_how_to_pull(
    empty: BackgroundServer, chats: list[OllamaChat]
) -> None:
    chat = OllamaChat(ollama_client(empty.url), ollama_url=empty.url)
    chats.append(chat)
    with pytest.raises(ProviderNotConfigured, match="ollama pull") as caught:
        await reply(chat)
    assert caught.value.field == "PARLEY_LLM_MODEL"


async def test_chat_without_ollama_is_unavailable_and_names_the_url_setting(chats: list[OllamaChat]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    unnamed = OllamaChat(ollama_client(url), ollama_url=url)
    named = OllamaChat(ollama_client(url), ollama_url=url, model="llama3.2")
    chats.extend([unnamed, named])
    for chat in (unnamed, named):
        with pytest.raises(ProviderUnavailable, match="PARLEY_OLLAMA_URL"):
            await reply(chat)


async def test_a_running_ollama_is_picked_when_nothing_is_configured(running: BackgroundServer) -> None:
    config = settings(ollama_url=running.url)
    chat = build_chat(config)
    try:
        assert isinstance(chat, OllamaChat)
        assert await reply(chat) == "You said: ping"
    finally:
        await chat.aclose()
    line = describe_choice(config)[0]
    assert line == (
        f"chat: ollama, model the first model it has pulled at {running.url}, because Ollama runs at "
        f"{running.url} with llama3.2:latest, qwen2.5:0.5b"
    )


async def test_a_base_url_wins_over_a_running_ollama(running: BackgroundServer) -> None:
    chat = build_chat(settings(ollama_url=running.url, llm_base_url=running.url + "/v1", llm_model="x"))
    try:
        assert type(chat).__name__ == "OpenAIChat"
    finally:
        await chat.aclose()
