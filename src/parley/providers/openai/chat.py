"""Chat on any OpenAI-compatible server, streamed with `stream_options.include_usage`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from parley.errors import ProviderError
from parley.providers.http import UpstreamResponse
from parley.providers.llm import ChatDelta, ChatProvider, ChatRequest
from parley.providers.openai.client import OpenAIClient, upstream_error
from parley.providers.sse import chat_deltas
from parley.providers.wire import (
    ToolCallPieces,
    content_of,
    finish_reason_of,
    message_json,
    tool_json,
    usage_of,
)

log = logging.getLogger(__name__)

DEFAULT_CHAT_MODEL = "gpt-4o-mini"
MODEL_SETTING = "PARLEY_LLM_MODEL"


class OpenAIChat(ChatProvider):
    """Streams `/chat/completions`. Owns `client`; cancelling the consumer closes the connection."""

    name = "openai"
    supports_tools = True

    def __init__(self, client: OpenAIClient, *, model: str = DEFAULT_CHAT_MODEL) -> None:
        self.client = client
        self.model = model

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [message_json(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "stream": True,
            # Without this the usage is never sent on a streamed reply.
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = [tool_json(t) for t in request.tools]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        async with self.client.stream(
            "/chat/completions", model=self.model, model_setting=MODEL_SETTING, json=self._body(request)
        ) as resp:
            if "text/event-stream" not in resp.headers.get("content-type", ""):
                # A server that ignores `stream` answers one completion object.
                async for delta in self._from_completion(resp):
                    yield delta
                return
            source = f"{self.client.where} ({self.model})"
            deltas = chat_deltas(
                resp,
                decode=self._decode,
                text_of=lambda chunk: content_of(chunk, "delta"),
                source=source,
                tools=bool(request.tools),
            )
            async with aclosing(deltas):
                async for delta in deltas:
                    yield delta

    def _decode(self, data: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            # The event's text is the upstream's: the log may have it, the client may not.
            log.warning("unreadable stream event from %s: %s", self.model, self.client.redacted(data[:120]))
            raise ProviderError(f"{self.client.where} sent an unreadable stream event") from exc
        if not isinstance(chunk, dict):
            log.warning("unexpected stream event from %s: %s", self.model, self.client.redacted(data[:120]))
            raise ProviderError(f"{self.client.where} sent an unexpected stream event")
        if chunk.get("error"):
            message, code = upstream_error(chunk)
            raise self.client.map_error(None, message, code, model=self.model, model_setting=MODEL_SETTING)
        return chunk

    async def _from_completion(self, resp: UpstreamResponse) -> AsyncIterator[ChatDelta]:
        await resp.aread()
        try:
            completion = resp.json()
        except ValueError as exc:
            raise ProviderError(f"{self.client.where} answered with neither a stream nor JSON") from exc
        if not isinstance(completion, dict):
            raise ProviderError(f"{self.client.where} answered with unexpected JSON")
        text = content_of(completion, "message")
        if text:
            yield ChatDelta(text=text)
        calls = ToolCallPieces(self.client.where)
        calls.feed(completion)
        usage, reason = usage_of(completion), finish_reason_of(completion)
        if usage is not None or reason is not None or calls.calls():
            yield ChatDelta(usage=usage, finish_reason=reason, tool_calls=calls.calls())

    async def aclose(self) -> None:
        await self.client.aclose()
