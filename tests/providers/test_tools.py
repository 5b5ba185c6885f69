"""Function calling through the real providers: OpenAI-compatible and Workers AI, each against its
stand-in over HTTP. The model is offered tools, calls one, and is answered with the result."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from parley.errors import ProviderError
from parley.providers.llm import TOOL_CALLS, ChatDelta, ChatMessage, ChatProvider, ChatRequest, Tool, ToolCall
from parley.providers.openai import OpenAIChat, OpenAIClient
from parley.providers.wire import MAX_TOOL_CALLS, ToolCallPieces
from parley.providers.workers_ai import WorkersAIChat, WorkersAIClient
from parley.standins import openai as openai_standin
from parley.standins import workers_ai as workers_standin
from parley.standins.common import init_state
from parley.standins.server import BackgroundServer

VOLUME = Tool(
    "self_audio_speaker_set_volume",
    "Set the speaker's volume, 0-100.",
    {"type": "object", "properties": {"volume": {"type": "integer"}}, "required": ["volume"]},
)
ASK = 'turn it down #tool:self_audio_speaker_set_volume{"volume": 30}'


@pytest.fixture(scope="module", params=["openai", "workers-ai"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, BackgroundServer]]:
    if request.param == "openai":
        app = openai_standin.create_app(api_key="k")
    else:
        app = workers_standin.create_app(account_id="acct", token="tok")
    with BackgroundServer(app) as server:
        yield request.param, server


def provider(kind: str, server: BackgroundServer) -> ChatProvider:
    init_state(server.app.state)
    if kind == "openai":
        return OpenAIChat(OpenAIClient(base_url=server.url + "/v1", api_key="k"))
    client = WorkersAIClient(account_id="acct", api_token="tok", base_url=server.url + "/client/v4")
    return WorkersAIChat(client)


async def collect(stream: AsyncIterator[ChatDelta]) -> list[ChatDelta]:
    return [delta async for delta in stream]


def sent(server: BackgroundServer) -> dict[str, Any]:
    """The JSON body of the last chat request the stand-in received."""
    body = server.app.state.requests[-1]["json"]
    assert isinstance(body, dict)
    return body


async def test_a_model_calls_an_offered_tool_and_reads_its_result(
    served: tuple[str, BackgroundServer],
) -> None:
    kind, server = served
    chat = provider(kind, server)
    try:
        assert chat.supports_tools
        messages = [ChatMessage("system", "sys"), ChatMessage("user", ASK)]
        deltas = await collect(chat.stream(ChatRequest(messages, tools=[VOLUME])))
        offered = sent(server)["tools"]
        assert offered == [
            {
                "type": "function",
                "function": {
                    "name": VOLUME.name,
                    "description": VOLUME.description,
                    "parameters": VOLUME.parameters,
                },
            }
        ]
        assert "".join(d.text for d in deltas) == ""
        calls = [c for d in deltas for c in d.tool_calls]
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [(VOLUME.name, {"volume": 30})]
        assert deltas[-1].finish_reason == TOOL_CALLS
        call = calls[0]

        answered = [
            *messages,
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", "volume is 30", tool_call_id=call.id, name=call.name),
        ]
        deltas = await collect(chat.stream(ChatRequest(answered, tools=[VOLUME])))
        assert "".join(d.text for d in deltas) == "The tool said: volume is 30"
        assert not [c for d in deltas for c in d.tool_calls]
        wire = sent(server)["messages"]
        assert wire[2]["tool_calls"] == [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        ]
        assert wire[3]["role"] == "tool" and wire[3]["tool_call_id"] == call.id
        assert wire[3]["content"] == "volume is 30"
        # Workers AI matches a result to its call by the tool's name; OpenAI's schema has no name there
        assert ("name" in wire[3]) is (kind == "workers-ai")
    finally:
        await chat.aclose()


async def test_no_tools_are_sent_when_none_are_offered(served: tuple[str, BackgroundServer]) -> None:
    kind, server = served
    chat = provider(kind, server)
    try:
        deltas = await collect(chat.stream(ChatRequest([ChatMessage("user", ASK)])))
        assert "tools" not in sent(server)
        assert "".join(d.text for d in deltas).startswith("You said: turn it down")
        assert not [c for d in deltas for c in d.tool_calls]
    finally:
        await chat.aclose()


def test_streamed_pieces_of_one_call_are_joined_by_index() -> None:
    pieces = ToolCallPieces("test")
    pieces.feed(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [{"index": 0, "id": "c1", "function": {"name": "a", "arguments": ""}}]
                    }
                }
            ]
        }
    )
    pieces.feed(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [{"index": 1, "id": "c2", "function": {"name": "b", "arguments": "{}"}}]
                    }
                }
            ]
        }
    )
    pieces.feed({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}}]})
    pieces.feed({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}}]})
    assert pieces.calls() == (ToolCall("c1", "a", '{"x": 1}'), ToolCall("c2", "b", "{}"))


def test_a_reply_with_too_many_calls_or_huge_arguments_is_a_provider_error() -> None:
    pieces = ToolCallPieces("the model")
    with pytest.raises(ProviderError, match=f"more than {MAX_TOOL_CALLS} tools"):
        pieces.feed({"tool_calls": [{"name": f"t{i}", "arguments": {}} for i in range(MAX_TOOL_CALLS + 1)]})
    pieces = ToolCallPieces("the model")
    with pytest.raises(ProviderError, match="tool arguments longer than"):
        pieces.feed({"tool_calls": [{"name": "t", "arguments": "x" * 70000}]})
