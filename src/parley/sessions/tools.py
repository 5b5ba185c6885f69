"""Tools a session's turns may offer the model, and how one call of them is made.

A `Toolbox` belongs to whatever provides the tools for a while (a XiaoZhi device's MCP tools, for
as long as it is connected: xiaozhi/mcp.py) and is set on the session as `ChatSession.toolbox`.
A turn on a provider that `supports_tools` offers them; when the model calls some, each call is
made here, its result goes back to the model as a `tool` message, and the model goes on writing
the same reply (at most `MAX_TOOL_ROUNDS` rounds of calls per turn).

A call never raises: a tool that is unknown, arguments that are not a JSON object, a tool that
fails or does not answer in time all become an error result the model reads and can explain.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from parley.errors import ParleyError
from parley.providers.llm import Tool, ToolCall

log = logging.getLogger("parley.tools")

#: rounds of tool calls one turn may make before the model must answer in words
MAX_TOOL_ROUNDS = 4
#: the longest tool result the model is given (a device's status can be long)
MAX_RESULT_CHARS = 8000


@dataclass(slots=True, frozen=True)
class ToolResult:
    text: str
    is_error: bool = False


class Toolbox(ABC):
    """A set of tools and the way to call them."""

    @abstractmethod
    def tools(self) -> Sequence[Tool]:
        """The tools offered now (names as the model may write them: letters, digits, _ and -)."""

    @abstractmethod
    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Run one tool; a failure is a `ParleyError` or an error result. Bounds its own time."""


async def use_tool(toolbox: Toolbox, call: ToolCall) -> ToolResult:
    """Make one call the model asked for; every failure is a result the model reads."""
    if call.name not in {tool.name for tool in toolbox.tools()}:
        return ToolResult(f"there is no tool named {call.name[:80]!r}", is_error=True)
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        return ToolResult("the arguments must be a JSON object", is_error=True)
    try:
        result = await toolbox.call(call.name, arguments)
    except ParleyError as exc:
        log.info("tool %s failed: %s", call.name, exc.message)
        return ToolResult(exc.message, is_error=True)
    if len(result.text) > MAX_RESULT_CHARS:
        return ToolResult(result.text[:MAX_RESULT_CHARS] + " [cut]", result.is_error)
    return result
