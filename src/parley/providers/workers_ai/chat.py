"""Chat on Workers AI (Llama 3.3 70B by default), streamed as server-sent events."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from parley.errors import ProviderError
from parley.providers.http import UpstreamResponse
from parley.providers.llm import LENGTH, TOOL_CALLS, ChatDelta, ChatProvider, ChatRequest
from parley.providers.sse import chat_deltas
from parley.providers.wire import ToolCallPieces, content_of, message_json, tool_json, usage_of
from parley.providers.workers_ai.client import WorkersAIClient, map_error, upstream_error
from parley.redact import redact

log = logging.getLogger(__name__)

DEFAULT_CHAT_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
MODEL_SETTING = "PARLEY_LLM_MODEL"


class WorkersAIChat(ChatProvider):
    """Streams replies from a Workers AI text-generation model.

    Owns `client` and closes it in `aclose()`. Cancelling the task that iterates `stream()`
    closes the HTTP connection, which ends generation (and billing) upstream.
    """

    name = "workers-ai"
    supports_tools = True

    def __init__(self, client: WorkersAIClient, *, model: str = DEFAULT_CHAT_MODEL) -> None:
        self.client = client
        self.model = model

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        # `stop` is not part of the Workers AI text-generation input, so it is not sent.
        body: dict[str, Any] = {
            "messages": [message_json(m, tool_names=True) for m in request.messages],
            "max_tokens": request.max_tokens,
            "stream": True,
        }
        if request.tools:
            body["tools"] = [tool_json(t) for t in request.tools]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        async with self.client.stream(
            self.model, model_setting=MODEL_SETTING, json=self._body(request)
        ) as resp:
            if "text/event-stream" not in resp.headers.get("content-type", ""):
                # Some gateways answer a streamed request with one JSON envelope; accept it whole.
                async for delta in self._from_envelope(resp, request):
                    yield delta
                return
            deltas = chat_deltas(
                resp,
                decode=self._decode,
                text_of=token_of,
                source=f"Workers AI ({self.model})",
                tools=bool(request.tools),
            )
            async with aclosing(deltas):
                async for delta in deltas:
                    yield with_finish_reason(delta, request)

    def _decode(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError as exc:
            # The event's text is the upstream's: the log may have it, the client may not.
            log.warning("unreadable stream event from %s: %s", self.model, redact(data[:120]))
            raise ProviderError(f"Workers AI sent an unreadable stream event for {self.model}") from exc
        if not isinstance(event, dict):
            log.warning("unexpected stream event from %s: %s", self.model, redact(data[:120]))
            raise ProviderError(f"Workers AI sent an unexpected stream event for {self.model}")
        if event.get("errors") or event.get("error") or event.get("success") is False:
            code, message = upstream_error(event)
            raise map_error(None, code, message, model=self.model, model_setting=MODEL_SETTING)
        return event

    async def _from_envelope(self, resp: UpstreamResponse, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        await resp.aread()
        try:
            envelope = resp.json()
        except ValueError as exc:
            raise ProviderError(f"Workers AI answered {self.model} with neither a stream nor JSON") from exc
        result = envelope.get("result") if isinstance(envelope, dict) else None
        if not isinstance(result, dict):
            code, message = upstream_error(envelope)
            raise map_error(resp.status_code, code, message, model=self.model, model_setting=MODEL_SETTING)
        text = token_of(result)
        if text:
            yield ChatDelta(text=text)
        calls = ToolCallPieces(f"Workers AI ({self.model})")
        calls.feed(result)
        if calls.calls():
            yield ChatDelta(usage=usage_of(result), finish_reason=TOOL_CALLS, tool_calls=calls.calls())
            return
        usage = usage_of(result)
        if usage is not None:
            yield with_finish_reason(ChatDelta(usage=usage), request)

    async def aclose(self) -> None:
        await self.client.aclose()


def with_finish_reason(delta: ChatDelta, request: ChatRequest) -> ChatDelta:
    """The last delta with a finish reason: the one sent (OpenAI-style models), or else "length"
    when the usage shows the whole `max_tokens` spent.

    Workers AI's own stream (`{"response": ...}` events, then the usage) does not say why it
    stopped; a reply that used every token it was allowed was cut off there.
    """
    if delta.usage is None or delta.finish_reason is not None:
        return delta
    if delta.usage.completion_tokens >= request.max_tokens:
        return ChatDelta(text=delta.text, usage=delta.usage, finish_reason=LENGTH)
    return delta


def token_of(event: dict[str, Any]) -> str:
    """The text of one event: `response`, or else `choices[0].delta.content` — never both.

    Some Workers AI streams carry each token in both places; adding them up would double it.
    """
    text = event.get("response")
    if isinstance(text, str) and text:
        return text
    return content_of(event, "delta")
