"""Automatic titles: the first words at once, then the model's title in their place (the real
OpenAI-compatible provider against its stand-in over HTTP), unless the user renamed it first."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from parley.bus.memory import LocalBus
from parley.providers.openai import OpenAIChat, OpenAIClient
from parley.sessions import events
from parley.sessions.titles import TITLE_PROMPT, Titler, clean_title
from parley.standins import openai as openai_standin
from parley.standins.common import init_state
from parley.standins.server import BackgroundServer
from parley.store.sqlite import SQLiteStore
from tests.conftest import ServerFactory, make_settings

KEY = "u1/s1"
ASKED = "how do tides work on the far side of the moon"


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with BackgroundServer(openai_standin.create_app()) as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    the_store = SQLiteStore(tmp_path / "p.db")
    await the_store.open()
    await the_store.create_conversation(KEY)
    yield the_store
    await the_store.aclose()


async def titled(bus: LocalBus, titler: Titler, *topics: str) -> dict[str, list[dict[str, object]]]:
    """Everything the titler publishes on `topics` until its writing is done."""
    subs = {topic: bus.subscribe(topic) for topic in topics}
    await titler.on_turn(KEY, ASKED)
    await titler.settled()
    seen: dict[str, list[dict[str, object]]] = {}
    for topic, sub in subs.items():
        seen[topic] = [json.loads(await sub.get()) for _ in range(sub.queued)]
    return seen


async def test_the_models_title_replaces_the_first_words(
    store: SQLiteStore, upstream: BackgroundServer
) -> None:
    init_state(upstream.app.state)
    bus = LocalBus()
    chat = OpenAIChat(OpenAIClient(base_url=upstream.url + "/v1"))
    titler = Titler(store, bus, chat)
    try:
        seen = await titled(bus, titler, KEY, events.user_topic("u1"))
    finally:
        await chat.aclose()
    # the stand-in echoes its prompt: "You said: <the first message>", cut to eight words
    expected = clean_title("You said: " + ASKED)
    assert [e.get("title") for e in seen[KEY]] == ["how do tides work on the far side…", expected]
    (listed,) = seen[events.user_topic("u1")]
    assert listed["action"] == "renamed"
    assert listed["session"]["title"] == expected  # type: ignore[index]
    found = await store.get_conversation(KEY)
    assert found is not None and found.title == expected
    sent = upstream.app.state.requests[-1]["json"]
    assert sent["messages"][0] == {"role": "system", "content": TITLE_PROMPT}
    assert sent["messages"][1]["content"] == ASKED and sent["max_tokens"] == 16


async def test_a_rename_while_the_model_writes_wins(store: SQLiteStore, upstream: BackgroundServer) -> None:
    holds = openai_standin.Holds()
    with BackgroundServer(openai_standin.create_app(holds=holds)) as held:
        chat = OpenAIChat(OpenAIClient(base_url=held.url + "/v1"))
        titler = Titler(store, LocalBus(), chat)
        holds.hold_next("title")
        await titler.on_turn(KEY, ASKED)
        await holds.started("title")
        await store.rename_conversation(KEY, "Tides, by me")
        holds.release("title")
        await titler.settled()
        await chat.aclose()
    found = await store.get_conversation(KEY)
    assert found is not None and found.title == "Tides, by me"


async def test_a_failing_model_leaves_the_first_words(store: SQLiteStore, upstream: BackgroundServer) -> None:
    chat = OpenAIChat(OpenAIClient(base_url=upstream.url + "/v1"))
    titler = Titler(store, LocalBus(), chat)
    try:
        await titler.on_turn(KEY, "#error:500 " + ASKED)
        await titler.settled()
    finally:
        await chat.aclose()
    found = await store.get_conversation(KEY)
    assert found is not None and found.title == "#error:500 how do tides work on the far…"


def test_what_a_model_writes_is_cleaned_into_a_title() -> None:
    assert clean_title('Title: "Tides on the Moon".') == "Tides on the Moon"
    assert clean_title("**Moon tides**\nHere is why...") == "Moon tides"
    assert clean_title("  \n\n") == ""
    assert clean_title("one two three four five six seven eight nine ten") == (
        "one two three four five six seven eight…"
    )


@pytest.mark.parametrize("titles", ["model", "words"])
async def test_parley_titles_chooses_who_writes_the_title(
    serve: ServerFactory, upstream: BackgroundServer, tmp_path: Path, titles: str
) -> None:
    init_state(upstream.app.state)
    settings = make_settings(
        tmp_path / "data",
        llm="openai",
        llm_base_url=upstream.url + "/v1",
        llm_model="gpt-4o-mini",
        titles=titles,
    )
    server = serve(settings=settings)
    words = "how do tides work on the far side…"
    url = server.url.replace("http", "ws", 1) + "/ws?sessionId=titled"
    async with websockets.connect(url) as ws, httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        await http.post("/api/chat", json={"message": ASKED, "sessionId": "titled"})
        told = []
        while len(told) < (2 if titles == "model" else 1):
            event = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if event["type"] == "title":
                told.append(event["title"])
        # a second turn, done after the first title's work has begun: what the model was asked
        await http.post("/api/chat", json={"message": "and the near side?", "sessionId": "titled"})
        (listed,) = (await http.get("/api/sessions")).json()["sessions"]
    asked = [r["json"]["messages"][0]["content"] for r in upstream.app.state.requests]
    if titles == "model":
        assert told == [words, clean_title("You said: " + ASKED)] and listed["title"] == told[-1]
        assert asked.count(TITLE_PROMPT) == 1
    else:
        assert told == [words] and listed["title"] == words
        assert TITLE_PROMPT not in asked


def test_auto_asks_every_model_but_one_in_this_process(tmp_path: Path) -> None:
    from parley.app import title_writer
    from parley.providers.llama_cpp.chat import LlamaCppChat
    from parley.providers.testing import EchoChat
    from parley.providers.unconfigured import UnconfiguredChat

    hosted, local = EchoChat(), EchoChat()
    local.in_process = True  # as LlamaCppChat is
    assert LlamaCppChat.in_process
    auto = make_settings(tmp_path, titles="auto")
    assert title_writer(auto, hosted) is hosted
    assert title_writer(auto, local) is None
    assert title_writer(make_settings(tmp_path, titles="model"), local) is local
    assert title_writer(make_settings(tmp_path, titles="words"), hosted) is None
    assert title_writer(make_settings(tmp_path, titles="model"), UnconfiguredChat("off")) is None
