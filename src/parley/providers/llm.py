"""The chat capability: a provider streams a reply to a list of messages.

A provider that can call functions (`supports_tools`) is offered `ChatRequest.tools`; it ends a
reply that calls some with `ChatDelta.tool_calls` (finish reason "tool_calls"), and the caller
sends the results back as `tool` messages for the model to go on (sessions/tools.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True, frozen=True)
class Tool:
    """A function the model may call: `parameters` is its JSON Schema (an object's)."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(slots=True, frozen=True)
class ToolCall:
    """The model's call of a tool; `arguments` as the model wrote them (JSON text)."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True, frozen=True)
class ChatMessage:
    role: Role
    content: str
    #: an assistant message: the tools it called (its `content` may then be empty)
    tool_calls: tuple[ToolCall, ...] = ()
    #: a `tool` message: the call it answers
    tool_call_id: str | None = None
    #: a `tool` message: the tool's name (some vendors match results by name, not id)
    name: str | None = None


@dataclass(slots=True, frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(slots=True)
class ChatRequest:
    messages: Sequence[ChatMessage]
    max_tokens: int = 512
    temperature: float | None = None
    stop: list[str] = field(default_factory=list)
    #: offered to a provider that `supports_tools` (others are never given any)
    tools: Sequence[Tool] = ()


#: the model stopped because it hit `max_tokens`: the reply is cut off (OpenAI's word, which
#: llama.cpp and Ollama's OpenAI-compatible API use too)
LENGTH = "length"
#: the model stopped to call tools (OpenAI's word)
TOOL_CALLS = "tool_calls"


@dataclass(slots=True, frozen=True)
class ChatDelta:
    """One piece of a streamed reply: some text, and on the last piece the usage if known.

    `finish_reason` (on the last piece) is why the model stopped, in the vendor's words:
    "stop" for a natural end, `LENGTH` when `max_tokens` cut the reply off; None when the vendor
    does not say.
    """

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    #: on the last piece: the tools the model called, whole (their arguments pieced together)
    tool_calls: tuple[ToolCall, ...] = ()


class ChatProvider(ABC):
    """Streams a chat reply. Cancelling the consuming task must cancel the upstream call."""

    name: str = "chat"
    model: str = ""
    #: whether the provider passes `ChatRequest.tools` on and returns the model's calls
    supports_tools: bool = False
    #: the model runs in this process, one request at a time (llama.cpp): a call off the turn's
    #: path (a title) delays the next turn's first token
    in_process: bool = False

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Yield the reply as it is written; raise a `ProviderError` subclass on failure."""

    async def aclose(self) -> None:
        """Release connections; a no-op unless the provider holds some."""

    async def warm_up(self) -> None:
        """Load the model ahead of the first request (`parley serve` calls it in the background);
        a no-op for providers that load nothing."""
