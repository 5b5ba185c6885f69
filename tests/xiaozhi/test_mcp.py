"""MCP tool calling: a device offers its tools over its own socket, the chat model calls one, the
device runs it, and the answer is spoken. The model is the OpenAI-compatible provider against its
stand-in over HTTP (which calls a tool on `#tool:NAME{args}`); the device is a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from parley.config import Settings
from parley.errors import ProviderError, ProviderTimeout
from parley.providers.factory import build_vad
from parley.providers.openai import OpenAIChat, OpenAIClient
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.sessions.tools import ToolResult
from parley.standins import openai as openai_standin
from parley.standins.server import BackgroundServer
from parley.xiaozhi.mcp import CALL_SECONDS, MAX_TOOLS, DeviceTools
from tests.conftest import ServerFactory, make_settings
from tests.xiaozhi.device import Device, history
from tests.xiaozhi.test_session import connect

MAC = "aa:bb:cc:00:0c:01"
SESSION = "xiaozhi-aabbcc000c01"
VOLUME_TOOL = {
    "name": "self.audio_speaker.set_volume",
    "description": "Set the volume of the audio speaker (0-100).",
    "inputSchema": {
        "type": "object",
        "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
        "required": ["volume"],
    },
}
STATUS_TOOL = {
    "name": "self.get_device_status",
    "description": "The device's status.",
    "inputSchema": {"type": "object", "properties": {}},
}
ASK = 'quieter please #tool:self_audio_speaker_set_volume{"volume": 30}'


class Speaker:
    """The device's side of MCP: answers initialize and tools/list (two pages), runs the calls."""

    def __init__(self, device: Device, *, answer_calls: bool = True) -> None:
        self.device = device
        self.answer_calls = answer_calls
        self.volume = 70
        self.requests: list[dict[str, Any]] = []

    async def answer(self, payload: dict[str, Any]) -> None:
        self.requests.append(payload)
        method, request_id = payload.get("method"), payload.get("id")
        if method == "initialize":
            result: dict[str, Any] = {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}}}
        elif method == "tools/list":
            first = not payload["params"].get("cursor")
            result = (
                {"tools": [STATUS_TOOL]} | {"nextCursor": "page-2"} if first else {"tools": [VOLUME_TOOL]}
            )
        elif method == "tools/call" and self.answer_calls:
            self.volume = payload["params"]["arguments"]["volume"]
            result = {"content": [{"type": "text", "text": f"volume set to {self.volume}"}], "isError": False}
        else:
            return  # a notification, or a call this device leaves unanswered
        await self.device.send(
            {
                "session_id": "",
                "type": "mcp",
                "payload": {"jsonrpc": "2.0", "id": request_id, "result": result},
            }
        )

    async def until(self, kind: str, state: str | None = None) -> dict[str, Any]:
        """Read the socket, answering MCP on the way, up to the first `kind` (and `state`) message."""
        while True:
            item = await self.device.next()
            if isinstance(item, dict) and item.get("type") == "mcp":
                await self.answer(item["payload"])
            elif isinstance(item, dict) and item.get("type") == kind and state in (None, item.get("state")):
                return item

    def methods(self) -> list[str]:
        return [str(r.get("method")) for r in self.requests]


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with BackgroundServer(openai_standin.create_app()) as server:
        yield server


@pytest.fixture
def vad_settings(tmp_path: Any) -> Settings:
    return make_settings(tmp_path / "data", vad="silero")


@pytest.fixture
def server(serve: ServerFactory, vad_settings: Settings, upstream: BackgroundServer) -> BackgroundServer:
    return serve(
        chat=OpenAIChat(OpenAIClient(base_url=upstream.url + "/v1")),
        stt=FixedLatencySTT(delay=0.05, text="unused"),
        tts=FixedLatencyTTS(first_byte=0.05, secs_per_char=0.01),
        vad=build_vad(vad_settings),
        settings=vad_settings,
    )


async def tools_listed(speaker: Speaker) -> None:
    """Until Parley has read the second page of the device's tools (then they are lent)."""
    while sum(m == "tools/list" for m in speaker.methods()) < 2:
        item = await speaker.device.next()
        assert isinstance(item, dict) and item.get("type") == "mcp", item
        await speaker.answer(item["payload"])


async def test_the_model_calls_a_device_tool_and_the_answer_is_spoken(server: BackgroundServer) -> None:
    device = await connect(server, MAC, features={"mcp": True})
    speaker = Speaker(device)
    await tools_listed(speaker)
    initialize = speaker.requests[0]
    assert initialize["method"] == "initialize" and initialize["params"]["protocolVersion"] == "2024-11-05"
    # xiaozhi-sdk reads these two keys; empty says there is no vision service
    assert initialize["params"]["capabilities"]["vision"] == {"url": "", "token": ""}
    assert speaker.methods()[:3] == ["initialize", "notifications/initialized", "tools/list"]
    assert speaker.requests[-1]["params"] == {"cursor": "page-2"}

    await device.send({"type": "listen", "state": "detect", "text": ASK})
    spoken = []
    while (said := await speaker.until("tts")).get("state") != "stop":
        if said.get("state") == "sentence_start":
            spoken.append(said["text"])
    assert " ".join(spoken) == "The tool said: volume set to 30"
    assert speaker.volume == 30
    (call,) = [r for r in speaker.requests if r.get("method") == "tools/call"]
    # the device's own name, with the model's arguments
    assert call["params"] == {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 30}}
    messages = await history(server.url, SESSION)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", ASK),
        ("assistant", "The tool said: volume set to 30"),
    ]
    await device.close()


async def test_typed_in_the_browser_the_tool_still_runs_on_the_device(server: BackgroundServer) -> None:
    import httpx

    device = await connect(server, MAC, features={"mcp": True})
    speaker = Speaker(device)
    await tools_listed(speaker)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        sent = asyncio.create_task(
            http.post("/api/chat", json={"message": ASK.replace("30", "12"), "sessionId": SESSION})
        )
        await speaker.until("tts", "stop")  # the device speaks the typed turn's reply
        answer = (await sent).json()
    assert answer["response"] == "The tool said: volume set to 12"
    assert speaker.volume == 12
    await device.close()


async def test_a_device_without_mcp_is_asked_nothing_and_offers_nothing(server: BackgroundServer) -> None:
    device = await connect(server, MAC, features={"mcp": False})
    await device.send({"type": "listen", "state": "detect", "text": ASK})
    await device.until_json("tts", "stop")
    assert not [m for m in device.log if isinstance(m, dict) and m.get("type") == "mcp"]
    messages = await history(server.url, SESSION)
    assert messages[-1]["content"].startswith("You said: quieter please")
    await device.close()


async def test_tools_go_when_the_device_goes(server: BackgroundServer) -> None:
    device = await connect(server, MAC, features={"mcp": True})
    await tools_listed(Speaker(device))
    await device.close()
    import httpx

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        answer = (await http.post("/api/chat", json={"message": ASK, "sessionId": SESSION})).json()
    # no device, no tool: the model was offered none, so the stand-in did not call one
    assert answer["response"].startswith("You said: quieter please")


# -- the client's own rules, on its own (a device that answers from a queue) -----------------


class Wire:
    """The device side of a DeviceTools: what it sent, and a way to answer."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    def send(self, payload: dict[str, Any]) -> None:
        self.sent.append(payload)
        self.arrived.set()

    async def next_request(self) -> dict[str, Any]:
        while not [p for p in self.sent if "id" in p and not p.get("_seen")]:
            self.arrived.clear()
            await self.arrived.wait()
        request = next(p for p in self.sent if "id" in p and not p.get("_seen"))
        request["_seen"] = True
        return request


async def started(tools: DeviceTools, wire: Wire, pages: list[dict[str, Any]]) -> None:
    task = asyncio.create_task(tools.start())
    init = await wire.next_request()
    tools.receive({"jsonrpc": "2.0", "id": init["id"], "result": {}})
    for page in pages:
        listing = await wire.next_request()
        tools.receive({"jsonrpc": "2.0", "id": listing["id"], "result": page})
    await task


async def test_names_are_made_safe_and_mapped_back_and_bad_schemas_replaced() -> None:
    wire = Wire()
    tools = DeviceTools(wire.send, device_id="d")
    odd = [
        {"name": "self.a.b", "inputSchema": {"type": "array"}},
        {"name": "self_a_b", "description": "x" * 5000},
        {"description": "no name"},
        "not a tool",
    ]
    await started(tools, wire, [{"tools": odd}])
    offered = tools.tools()
    assert [t.name for t in offered] == ["self_a_b", "self_a_b_2"]
    assert offered[0].parameters == {"type": "object", "properties": {}}
    assert len(offered[1].description) == 1024
    call = asyncio.create_task(tools.call("self_a_b_2", {"k": 1}))
    request = await wire.next_request()
    assert request["params"] == {"name": "self_a_b", "arguments": {"k": 1}}
    tools.receive(
        {
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {"content": [{"type": "text", "text": "ok"}], "isError": True},
        }
    )
    assert await call == ToolResult("ok", is_error=True)


async def test_a_device_listing_endless_pages_is_bounded() -> None:
    wire = Wire()
    tools = DeviceTools(wire.send, device_id="d")
    many = [{"tools": [{"name": f"t{p}_{i}"} for i in range(10)], "nextCursor": f"c{p}"} for p in range(20)]
    task = asyncio.create_task(started(tools, wire, many[: MAX_TOOLS // 10 + 1]))
    await task
    assert len(tools.tools()) == MAX_TOOLS


async def test_an_error_answer_a_silent_device_and_a_disconnect_fail_the_call_clearly() -> None:
    wire = Wire()
    tools = DeviceTools(wire.send, device_id="d", call_seconds=CALL_SECONDS)
    await started(tools, wire, [{"tools": [VOLUME_TOOL]}])
    name = tools.tools()[0].name
    call = asyncio.create_task(tools.call(name, {"volume": 1}))
    request = await wire.next_request()
    tools.receive(
        {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": "no such tool"}}
    )
    with pytest.raises(ProviderError, match="no such tool"):
        await call
    call = asyncio.create_task(tools.call(name, {"volume": 1}))
    await wire.next_request()
    tools.close()  # the device went away mid-call
    with pytest.raises(ProviderError, match="disconnected"):
        await call
    silent = DeviceTools(Wire().send, device_id="d", call_seconds=0.01)
    with pytest.raises(ProviderTimeout, match=r"did not answer initialize within 0\.01 s"):
        await silent.start()
    assert (await tools.call("missing", {})).is_error
    with pytest.raises(Exception, match="answer to no request"):
        tools.receive({"jsonrpc": "2.0", "id": 999, "result": {}})
    assert json.dumps(tools.tools()) == "[]"
