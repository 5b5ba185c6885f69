"""Reading server-sent events from a model's streamed reply.

Both Workers AI and OpenAI-compatible servers stream `data: <json>` events. We decode them
ourselves rather than with a line iterator such as httpx's `aiter_lines()`, which splits on every
Unicode line break (U+2028, U+2029, U+0085) and JSON may carry those characters unescaped inside a token;
the event-stream format ends lines only at CR, LF or CRLF.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from parley.errors import ProviderUnavailable
from parley.providers.http import UpstreamResponse
from parley.providers.llm import TOOL_CALLS, ChatDelta, Usage
from parley.providers.wire import ToolCallPieces, finish_reason_of, usage_of

_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    """Turns text, in chunks cut anywhere, into the `data` payload of each complete event.

    Fields other than `data` (`event`, `id`, `retry`) and comment lines are dropped: none of the
    model APIs we speak put meaning in them.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []
        # A chunk that ends in CR may be half of a CRLF; the LF that follows must not end a second line.
        self._skip_lf = False

    def feed(self, text: str) -> list[str]:
        if self._skip_lf and text:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._buffer + text
        events: list[str] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer):
                self._skip_lf = True
            self._line(buffer[start : match.start()], events)
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def flush(self) -> list[str]:
        """Dispatch what is left when the stream ends without a final blank line (lenient)."""
        events: list[str] = []
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = ""
        self._line("", events)
        return events

    def _line(self, line: str, events: list[str]) -> None:
        if not line:
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)


async def iter_sse_data(response: UpstreamResponse) -> AsyncGenerator[str, None]:
    """Yield each event's data from a streamed response (a UTF-8 character split across reads is joined first)."""
    decoder = SSEDecoder()
    async for text in response.aiter_text():
        for data in decoder.feed(text):
            yield data
    for data in decoder.flush():
        yield data


async def drain(events: AsyncIterator[str], *, seconds: float = 0.5) -> None:
    """Read what follows `[DONE]` to the end of the body, so the connection can be reused.

    Stopping at `[DONE]` closes the connection instead, and the next turn pays a new TCP + TLS
    handshake before its first token. A server that keeps the body open after `[DONE]` gets
    `seconds`, then the connection is dropped as before.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for _ in events:
                pass


async def chat_deltas(
    response: UpstreamResponse,
    *,
    decode: Callable[[str], dict[str, Any]],
    text_of: Callable[[dict[str, Any]], str],
    source: str,
    tools: bool = False,
) -> AsyncGenerator[ChatDelta, None]:
    """The deltas of an OpenAI-style chat stream: text as it comes, then the usage and the
    finish reason (`choices[0].finish_reason`: "length" when max_tokens cut the reply) if sent.

    `decode` turns one `data:` payload into an event (raising on an error event), `text_of`
    picks its text. With `tools` the calls the model made come whole on the last delta. A stream
    that ends before `[DONE]` was cut off: `ProviderUnavailable`.
    """
    calls = ToolCallPieces(source) if tools else None
    usage: Usage | None = None
    reason: str | None = None
    finished = False
    async with aclosing(iter_sse_data(response)) as events:
        async for data in events:
            if data.strip() == "[DONE]":
                finished = True
                await drain(events)
                break
            event = decode(data)
            text = text_of(event)
            if text:
                yield ChatDelta(text=text)
            usage = usage_of(event) or usage
            reason = finish_reason_of(event) or reason
            if calls is not None:
                calls.feed(event)
    if not finished:
        raise ProviderUnavailable(f"{source} stream ended before the reply was complete")
    called = calls.calls() if calls is not None else ()
    if called and reason is None:
        reason = TOOL_CALLS  # Workers AI's own stream does not say why it stopped
    if usage is not None or reason is not None or called:
        yield ChatDelta(usage=usage, finish_reason=reason, tool_calls=called)
