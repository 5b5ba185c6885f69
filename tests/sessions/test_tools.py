"""A turn that calls tools: the model (the OpenAI-compatible provider against its stand-in, over
HTTP) is offered the session's toolbox, calls a tool, reads the result and answers in words; one
reply, stored once, with a `tool_call` event between its chunks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from parley.bus.memory import LocalBus
from parley.errors import ProviderTimeout
from parley.providers.llm import ChatRequest, Tool
from parley.providers.openai import OpenAIChat, OpenAIClient
from parley.providers.testing import EchoChat
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.sessions.tools import MAX_TOOL_ROUNDS, Toolbox, ToolResult
from parley.standins import openai as openai_standin
from parley.standins.common import init_state
from parley.standins.server import BackgroundServer
from parley.store.base import MessageStatus
from parley.store.sqlite import SQLiteStore
from tests.sessions.test_turn_endings import drain

CONFIG = SessionConfig(system_prompt="sys", history_limit=20, max_tokens=64, max_queued_turns=4)
SET_VOLUME = "self_audio_speaker_set_volume"


class Speaker(Toolbox):
    """A device's speaker: its volume is what the calls left it at."""

    def __init__(self) -> None:
        self.volume = 50
        self.calls: list[dict[str, Any]] = []
        self.fail_with: Exception | None = None

    def tools(self) -> Sequence[Tool]:
        schema = {"type": "object", "properties": {"volume": {"type": "integer"}}, "required": ["volume"]}
        return [Tool(SET_VOLUME, "Set the speaker volume (0-100).", schema)]

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        self.calls.append(arguments)
        if self.fail_with is not None:
            raise self.fail_with
        volume = arguments.get("volume")
        if not isinstance(volume, int) or not 0 <= volume <= 100:
            return ToolResult("volume must be an integer from 0 to 100", is_error=True)
        self.volume = volume
        return ToolResult(f"the volume is {volume}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with BackgroundServer(openai_standin.create_app()) as server:
        yield server


@pytest.fixture
async def registry(tmp_path: Path, upstream: BackgroundServer) -> AsyncIterator[SessionRegistry]:
    init_state(upstream.app.state)
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    chat = OpenAIChat(OpenAIClient(base_url=upstream.url + "/v1"))
    the_registry = SessionRegistry(store=store, chat=chat, bus=LocalBus(), config=CONFIG)
    yield the_registry
    await the_registry.aclose()
    await chat.aclose()
    await store.aclose()


async def test_the_model_calls_the_sessions_tool_and_speaks_its_result(
    registry: SessionRegistry, upstream: BackgroundServer
) -> None:
    speaker = Speaker()
    session = registry.get("s")
    registry.lend_tools("s", speaker)
    turn = session.submit(f'quieter please #tool:{SET_VOLUME}{{"volume": 30}}')
    feed = turn.watch()
    reply = await turn.done
    assert speaker.volume == 30 and speaker.calls == [{"volume": 30}]
    assert reply.content == "The tool said: the volume is 30"
    assert reply.status is MessageStatus.COMPLETE
    seen = await drain(feed)
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "user_message" and kinds[-1] == "reply"
    calls = [e for e in seen if e["type"] == "tool_call"]
    assert len(calls) == 1
    assert calls[0]["name"] == SET_VOLUME and json.loads(str(calls[0]["arguments"])) == {"volume": 30}
    assert calls[0]["result"] == "the volume is 30" and calls[0]["isError"] is False
    assert calls[0]["messageId"] == reply.id
    assert kinds.index("tool_call") < kinds.index("chunk")  # the words come after the call
    history = await session.history()
    assert [(m.role, m.content) for m in history][-1] == ("assistant", "The tool said: the volume is 30")
    assert len(history) == 2  # one reply, however many model calls it took
    # the second model call saw the first one's call and the tool's answer
    second = upstream.app.state.requests[-1]["json"]["messages"]
    assert [m["role"] for m in second[-2:]] == ["assistant", "tool"]
    assert turn.usage is not None and turn.usage.total_tokens > 2  # both calls' usage counted


@pytest.mark.parametrize(
    ("said", "fails", "answer"),
    [
        (f'#tool:{SET_VOLUME}{{"volume": 300}}', None, "volume must be an integer from 0 to 100"),
        (f"#tool:{SET_VOLUME}[1, 2]", None, "the arguments must be a JSON object"),
        (
            f'#tool:{SET_VOLUME}{{"volume": 5}}',
            ProviderTimeout("the device did not answer in 30 s"),
            "the device did not answer in 30 s",
        ),
    ],
)
async def test_a_failing_call_is_an_error_result_the_model_explains(
    registry: SessionRegistry, said: str, fails: Exception | None, answer: str
) -> None:
    speaker = Speaker()
    speaker.fail_with = fails
    session = registry.get("s")
    registry.lend_tools("s", speaker)
    turn = session.submit(said)
    feed = turn.watch()
    reply = await turn.done
    assert reply.status is MessageStatus.COMPLETE
    assert reply.content == f"The tool said: {answer}"
    (call,) = [e for e in await drain(feed) if e["type"] == "tool_call"]
    assert call["isError"] is True and call["result"] == answer
    assert speaker.volume == 50


async def test_a_model_that_keeps_calling_is_made_to_answer_in_words(
    registry: SessionRegistry, upstream: BackgroundServer
) -> None:
    class Loop(Speaker):  # every result asks for the tool again
        async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
            await super().call(name, arguments)
            return ToolResult(f'again #tool:{SET_VOLUME}{{"volume": 1}}')

    session = registry.get("s")
    registry.lend_tools("s", Loop())
    before = len(upstream.app.state.requests)
    turn = session.submit(f'#tool:{SET_VOLUME}{{"volume": 1}}')
    reply = await turn.done
    assert reply.status is MessageStatus.COMPLETE
    requests = upstream.app.state.requests[before:]
    # the stand-in calls again whenever a tool is offered and asked for; the last call offers none
    assert len(requests) == MAX_TOOL_ROUNDS + 1
    assert "tools" not in requests[-1]["json"]


async def test_a_provider_without_tools_is_never_offered_them(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    chat = EchoChat()
    assert not chat.supports_tools
    registry = SessionRegistry(store=store, chat=chat, bus=LocalBus(), config=CONFIG)
    try:
        session = registry.get("s")
        speaker = Speaker()
        registry.lend_tools("s", speaker)
        reply = await session.submit(f'#tool:{SET_VOLUME}{{"volume": 1}}').done
        assert reply.content.startswith("You said:")
        assert isinstance(chat.requests[-1], ChatRequest) and not chat.requests[-1].tools
        assert speaker.calls == []
    finally:
        await registry.aclose()
        await store.aclose()


async def test_a_stop_during_a_tool_call_ends_the_turn(registry: SessionRegistry) -> None:
    entered = asyncio.Event()

    class Slow(Speaker):
        async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
            entered.set()
            await asyncio.Event().wait()  # a device that never answers
            raise AssertionError("unreachable")

    session = registry.get("s")
    registry.lend_tools("s", Slow())
    turn = session.submit(f'#tool:{SET_VOLUME}{{"volume": 1}}')
    await entered.wait()
    session.stop(turn.id)
    with pytest.raises(Exception, match="stopped"):
        await turn.done
    assert turn.reply is not None and turn.reply.status is MessageStatus.CANCELLED


async def test_withdrawn_tools_are_offered_no_more(registry: SessionRegistry) -> None:
    speaker, newer = Speaker(), Speaker()
    registry.lend_tools("s", speaker)
    registry.lend_tools("s", newer)  # the device reconnected
    registry.withdraw_tools("s", speaker)  # its old connection ends after the new one began
    session = registry.get("s")
    assert session.toolbox is newer
    registry.withdraw_tools("s", newer)
    assert session.toolbox is None
    reply = await session.submit(f'#tool:{SET_VOLUME}{{"volume": 1}}').done
    assert reply.content.startswith("You said:") and speaker.calls == newer.calls == []
