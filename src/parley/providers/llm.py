"""The chat capability: a provider streams a reply to a list of messages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(slots=True, frozen=True)
class ChatMessage:
    role: Role
    content: str


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


#: the model stopped because it hit `max_tokens`: the reply is cut off (OpenAI's word, which
#: llama.cpp and Ollama's OpenAI-compatible API use too)
LENGTH = "length"


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


class ChatProvider(ABC):
    """Streams a chat reply. Cancelling the consuming task must cancel the upstream call."""

    name: str = "chat"
    model: str = ""

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Yield the reply as it is written; raise a `ProviderError` subclass on failure."""

    async def aclose(self) -> None:
        """Release connections; a no-op unless the provider holds some."""

    async def warm_up(self) -> None:
        """Load the model ahead of the first request (`parley serve` calls it in the background);
        a no-op for providers that load nothing."""
