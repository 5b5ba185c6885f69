"""A XiaoZhi device's MCP tools, offered to the chat model while the device is connected.

The device is the MCP server and Parley the client, over the device's own connection: each
JSON-RPC 2.0 message travels as `{"type": "mcp", "payload": ...}`. After the device's hello says
`features.mcp`, Parley sends `initialize` (protocol 2024-11-05; `capabilities.vision` with an
empty url and token: Parley has no vision service, and devices treat an empty url as none), the
`notifications/initialized` notification, then `tools/list` page by page (`cursor` /
`nextCursor`). The tools become a `Toolbox` the session's turns offer the model; a call is
`tools/call {name, arguments}` answered by `result.content[].text` and `isError`, within
`CALL_SECONDS` (the reference server's 30 s).

MCP names such as `self.audio_speaker.set_volume` are not function names every vendor accepts
(`^[A-Za-z0-9_-]{1,64}$`), so each is offered as a safe spelling (`self_audio_speaker_set_volume`)
and mapped back for the call. What a device sends is bounded: at most `MAX_TOOLS` tools over
`MAX_PAGES` pages, descriptions cut to `MAX_DESCRIPTION` characters, and a schema that is not an
object's is replaced by an empty object schema.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from parley.errors import InvalidInput, ProviderError, ProviderTimeout
from parley.providers.llm import Tool
from parley.sessions.tools import Toolbox, ToolResult

log = logging.getLogger("parley.xiaozhi")

PROTOCOL_VERSION = "2024-11-05"
#: how long the device has to answer a request (a tool call, or initialize / tools/list)
CALL_SECONDS = 30.0
MAX_TOOLS = 64
MAX_PAGES = 8
MAX_DESCRIPTION = 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


class DeviceTools(Toolbox):
    """The MCP client of one device connection: `start()` lists the tools, `receive()` takes the
    device's mcp payloads, `close()` fails what is still waiting."""

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        *,
        device_id: str,
        call_seconds: float = CALL_SECONDS,
    ) -> None:
        #: puts one JSON-RPC payload on the device's outbox
        self._send = send
        self.device_id = device_id
        self.call_seconds = call_seconds
        self._next_id = 1
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._tools: list[Tool] = []
        #: offered name -> the device's own name
        self._names: dict[str, str] = {}
        self._closed = False

    # -- the Toolbox --------------------------------------------------------------------------

    def tools(self) -> Sequence[Tool]:
        return self._tools

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        device_name = self._names.get(name)
        if device_name is None:
            return ToolResult(f"the device has no tool named {name[:80]!r}", is_error=True)
        result = await self.request("tools/call", {"name": device_name, "arguments": arguments})
        content = result.get("content")
        parts = content if isinstance(content, list) else []
        texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return ToolResult("\n".join(texts) or "(no answer)", is_error=result.get("isError") is True)

    # -- the protocol -------------------------------------------------------------------------

    async def start(self) -> int:
        """Initialize and list the device's tools; returns how many it offers."""
        await self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {
                    "roots": {"listChanged": True},
                    "sampling": {},
                    "vision": {"url": "", "token": ""},
                },
                "clientInfo": {"name": "parley", "version": "1"},
            },
        )
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools: list[Tool] = []
        names: dict[str, str] = {}
        cursor = ""
        for _ in range(MAX_PAGES):
            page = await self.request("tools/list", {"cursor": cursor} if cursor else {})
            listed = page.get("tools")
            for entry in listed if isinstance(listed, list) else []:
                tool = self._tool(entry, names)
                if tool is not None and len(tools) < MAX_TOOLS:
                    tools.append(tool)
            following = page.get("nextCursor")
            cursor = following if isinstance(following, str) else ""
            if not cursor or len(tools) >= MAX_TOOLS:
                break
        self._tools, self._names = tools, names
        log.info("xiaozhi device=%s offers %d tools", self.device_id, len(tools))
        return len(tools)

    def _tool(self, entry: object, names: dict[str, str]) -> Tool | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            return None
        own = entry["name"][:200]
        offered = _UNSAFE.sub("_", own)[:60]
        base, n = offered, 2
        while offered in names:  # two names that differ only in unsafe characters
            offered, n = f"{base}_{n}", n + 1
        names[offered] = own
        description = entry.get("description")
        schema = entry.get("inputSchema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            schema = EMPTY_SCHEMA
        return Tool(offered, description[:MAX_DESCRIPTION] if isinstance(description, str) else own, schema)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One JSON-RPC request to the device; its `result`, or a `ProviderError` saying why not."""
        if self._closed:
            raise ProviderError("the device has disconnected")
        request_id = self._next_id
        self._next_id += 1
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            async with asyncio.timeout(self.call_seconds):
                return await waiter
        except TimeoutError:
            raise ProviderTimeout(
                f"the device did not answer {method} within {self.call_seconds:g} s"
            ) from None
        finally:
            self._waiting.pop(request_id, None)

    def receive(self, payload: dict[str, Any]) -> None:
        """A payload from the device: the answer to a request (others, notifications, are logged)."""
        request_id = payload.get("id")
        waiter = self._waiting.get(request_id) if isinstance(request_id, int) else None
        if waiter is None:
            if "method" not in payload:
                raise InvalidInput(
                    f"an mcp answer to no request ({str(request_id)[:20]})", field="payload.id"
                )
            log.debug("xiaozhi device=%s mcp %s", self.device_id, str(payload.get("method"))[:60])
            return
        if waiter.done():
            return
        error = payload.get("error")
        result = payload.get("result")
        if isinstance(error, dict):
            message = str(error.get("message") or "error")[:200]
            waiter.set_exception(ProviderError(f"the device answered with an error: {message}"))
        elif isinstance(result, dict):
            waiter.set_result(result)
        else:
            waiter.set_exception(ProviderError("the device's answer has no result"))

    def close(self) -> None:
        self._closed = True
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ProviderError("the device disconnected before it answered"))
        self._waiting.clear()
        self._tools = []
