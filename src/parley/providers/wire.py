"""Fields of OpenAI-shaped JSON that several vendors share (OpenAI-compatible servers, Workers AI)."""

from __future__ import annotations

import json
from typing import Any

from parley.errors import ProviderError
from parley.providers.llm import ChatMessage, Tool, ToolCall, Usage


def content_of(chunk: dict[str, Any], key: str) -> str:
    """`choices[0][key].content`, where key is `delta` in a stream and `message` in a completion."""
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        part = choices[0].get(key)
        if isinstance(part, dict):
            content = part.get("content")
            if isinstance(content, str):
                return content
    return ""


def finish_reason_of(chunk: dict[str, Any]) -> str | None:
    """`choices[0].finish_reason`: why the model stopped ("stop", "length", ...), once it says."""
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        if isinstance(reason, str) and reason:
            return reason
    return None


def usage_of(chunk: dict[str, Any]) -> Usage | None:
    # Chunks before the last carry `"usage": null` when include_usage is on.
    raw = chunk.get("usage")
    if not isinstance(raw, dict):
        return None

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) else 0

    prompt, completion = count("prompt_tokens"), count("completion_tokens")
    return Usage(prompt, completion, count("total_tokens") or prompt + completion)


def tool_json(tool: Tool) -> dict[str, Any]:
    """A tool as OpenAI's `tools` entries spell it (Workers AI reads the same shape)."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def message_json(message: ChatMessage, *, tool_names: bool = False) -> dict[str, Any]:
    """One message of the request. `tool_names`: a tool result also says the tool's name (Workers
    AI matches results by name; OpenAI's schema has no such field on a tool message)."""
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        body["content"] = message.content or None
        body["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        body["tool_call_id"] = message.tool_call_id
    if tool_names and message.role == "tool" and message.name:
        body["name"] = message.name
    return body


#: the most calls one reply may make, and the longest arguments one call may have
MAX_TOOL_CALLS = 16
MAX_ARGUMENT_CHARS = 64 * 1024


class ToolCallPieces:
    """The tool calls of one reply, pieced together from wherever the vendor puts them.

    OpenAI streams each call in pieces (`choices[0].delta.tool_calls[i]`: the id and name first,
    then the arguments a few characters at a time, matched by `index`) and a completion carries
    them whole (`choices[0].message.tool_calls`); Workers AI's own format is a top-level
    `tool_calls: [{"name", "arguments"}]`, the arguments an object. A reply that calls too many,
    or writes arguments too long to be a call, is a `ProviderError`.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._parts: dict[int, dict[str, Any]] = {}

    def feed(self, event: dict[str, Any]) -> None:
        choices = event.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            for key in ("delta", "message"):
                part = choices[0].get(key)
                if isinstance(part, dict) and isinstance(part.get("tool_calls"), list):
                    for i, piece in enumerate(part["tool_calls"]):
                        if isinstance(piece, dict):
                            index = piece.get("index")
                            self._add(index if isinstance(index, int) else i, piece)
        top = event.get("tool_calls")
        if isinstance(top, list):
            for piece in top:
                if isinstance(piece, dict):
                    self._add(len(self._parts), piece)

    def _add(self, index: int, piece: dict[str, Any]) -> None:
        if index not in self._parts and len(self._parts) >= MAX_TOOL_CALLS:
            raise ProviderError(f"{self.source} called more than {MAX_TOOL_CALLS} tools in one reply")
        call = self._parts.setdefault(index, {"id": "", "name": "", "arguments": ""})
        nested = piece.get("function")
        function: dict[str, Any] = nested if isinstance(nested, dict) else piece
        if isinstance(piece.get("id"), str):
            call["id"] = piece["id"]
        if isinstance(function.get("name"), str):
            call["name"] += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if isinstance(arguments, str):
            call["arguments"] += arguments
            if len(call["arguments"]) > MAX_ARGUMENT_CHARS:
                raise ProviderError(
                    f"{self.source} wrote tool arguments longer than {MAX_ARGUMENT_CHARS} characters"
                )

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(id=part["id"] or f"call_{index}", name=part["name"], arguments=part["arguments"] or "{}")
            for index, part in sorted(self._parts.items())
            if part["name"]
        )
