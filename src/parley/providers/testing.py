"""Providers with fixed, known behaviour and latency, for tests, benchmarks and demos.

`EchoChat` answers "You said: <last user message>" word by word; it is a real provider (it
honours max_tokens, stop strings and cancellation), only its "model" is trivial.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from parley.providers.llm import ChatDelta, ChatProvider, ChatRequest, Usage


class EchoChat(ChatProvider):
    name = "echo"
    model = "echo"

    def __init__(self, *, first_token_delay: float = 0.0, token_interval: float = 0.0) -> None:
        self.first_token_delay = first_token_delay
        self.token_interval = token_interval
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        self.requests.append(request)
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        words = f"You said: {last}".split(" ")
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)][: request.max_tokens]
        await asyncio.sleep(self.first_token_delay)
        written = ""
        for i, token in enumerate(tokens):
            if i and self.token_interval:
                await asyncio.sleep(self.token_interval)
            stop_at = min((p for s in request.stop if (p := (written + token).find(s)) >= 0), default=-1)
            if stop_at >= 0:
                token = (written + token)[:stop_at][len(written) :]
                if token:
                    yield ChatDelta(token)
                break
            written += token
            yield ChatDelta(token)
        yield ChatDelta(usage=Usage(len(request.messages), len(tokens), len(request.messages) + len(tokens)))
