"""What the model stand-ins share: test triggers, request records, and a stream that sees clients leave.

Tests steer a stand-in through the text it receives (the last user message, or ASCII inside the
audio bytes), so the provider under test sends exactly what it would send in production:

    #error:NNNN       answer with that error code instead of a reply
    #sleep:SECONDS    wait before the first token (or before the transcript)
    #fail-midstream   drop the connection after two tokens
    #tool:NAME{json}  call tool NAME with those arguments, when the request offers a tool of that
                      name (in a tool's result too: the model calls again)
    SAY:<text>        (audio only) the transcript to return

A request whose last message is a tool's result is answered "The tool said: <result>".
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

_ERROR = re.compile(r"#error:(\w+)")
_SLEEP = re.compile(r"#sleep:(\d+(?:\.\d+)?)")
_SAY = re.compile(rb"SAY:([\x20-\x7e]+)")
_TOKEN = re.compile(r"\s*\S+")
_TOOL = re.compile(r"#tool:([\w.-]+)([\[{].*[\]}])?")


@dataclass(slots=True, frozen=True)
class Triggers:
    error: str | None = None
    sleep: float = 0.0
    fail_midstream: bool = False


def triggers_in(text: str) -> Triggers:
    error = _ERROR.search(text)
    sleep = _SLEEP.search(text)
    return Triggers(
        error=error.group(1) if error else None,
        sleep=float(sleep.group(1)) if sleep else 0.0,
        fail_midstream="#fail-midstream" in text,
    )


def triggers_in_audio(data: bytes) -> Triggers:
    # latin-1 maps every byte to one character, so ASCII markers survive any binary around them.
    return triggers_in(data.decode("latin-1"))


def transcript_of(data: bytes) -> str:
    """Deterministic "recognition": the `SAY:` marker's text, else a description of the bytes."""
    match = _SAY.search(data)
    if match:
        return match.group(1).decode("ascii").strip()
    return f"audio of {len(data)} bytes"


def tokens_of(text: str) -> list[str]:
    """Word tokens, each carrying its leading whitespace, as a tokenizer's pieces would."""
    return _TOKEN.findall(text)


def last_user_text(messages: Any) -> str:
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else json.dumps(content)
    return ""


def tool_call_in(payload: dict[str, Any]) -> tuple[str, str] | None:
    """(name, arguments JSON) of the `#tool:` trigger in the last user message (or in the tool
    result the request ends with: a model that calls again), if the request offers a tool of that
    name (OpenAI's `tools` shape, or Workers AI's bare `{name, ...}`)."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return None
    result = tool_result_in(messages)
    match = _TOOL.search(result if result is not None else last_user_text(messages))
    if match is None:
        return None
    offered = set()
    for tool in payload.get("tools") or ():
        if isinstance(tool, dict):
            nested = tool.get("function")
            offered.add((nested if isinstance(nested, dict) else tool).get("name"))
    if match.group(1) not in offered:
        return None
    return match.group(1), match.group(2) or "{}"


def tool_result_in(messages: Any) -> str | None:
    """The content of the last message when it is a tool's result."""
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        last = messages[-1]
        if last.get("role") == "tool":
            return str(last.get("content") or "")
    return None


def reply_text(messages: Any) -> str:
    """What the stand-ins answer: the user's words said back, or the result of the tool called."""
    result = tool_result_in(messages)
    return f"The tool said: {result}" if result is not None else "You said: " + last_user_text(messages)


def sse(payload: Any) -> bytes:
    """One `data:` event; non-ASCII stays raw, as JavaScript's JSON.stringify writes it."""
    data = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    )
    return f"data: {data}\n\n".encode()


def init_state(state: State) -> None:
    state.requests = []
    state.cancelled_streams = 0
    state.completed_streams = 0
    state.first_byte_times = []


def record(request: Request, **fields: Any) -> dict[str, Any]:
    """Append what a test may want to check about a request; only whether a credential came, not it."""
    entry: dict[str, Any] = {
        "path": request.url.path,
        "headers": {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        "authorized": "authorization" in request.headers,
        # the client's port tells tests whether connections are reused between calls
        "client_port": request.client.port if request.client else None,
        **fields,
    }
    request.app.state.requests.append(entry)
    return entry


def mark_first_token(state: State) -> None:
    """Called just before the first token is handed to the server, for time-to-first-token."""
    state.first_byte_times.append(time.perf_counter())


async def pause(request: Request, seconds: float) -> None:
    """Sleep before a whole (non-streamed) answer, but stop early if the client has given up.

    Without this a client that timed out would leave the handler sleeping, and the server's
    graceful shutdown would wait for it.
    """
    if seconds <= 0:
        return
    watch = asyncio.create_task(_wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({watch}, timeout=seconds)
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


class StreamAborted(Exception):
    """Raised inside a stream to make uvicorn drop the connection mid-body, as a crashed upstream would."""


class _QuietAborts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, StreamAborted)


def quiet_aborts() -> None:
    """Keep uvicorn from logging a traceback for every deliberate `#fail-midstream`."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietAborts) for f in logger.filters):
        logger.addFilter(_QuietAborts())


class TrackedStream(Response):
    """An event-stream response that stops generating as soon as the client goes away.

    It watches `receive()` for `http.disconnect` while it writes, cancels the generator when the
    client leaves, and counts that in `state.cancelled_streams`: the proof, for tests, that
    cancelling a turn in Parley stops the model call upstream.
    """

    media_type = "text/event-stream"

    def __init__(self, state: State, chunks: AsyncGenerator[bytes, None]) -> None:
        self.state = state
        self.chunks = chunks
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        pump = asyncio.create_task(self._pump(send))
        watch = asyncio.create_task(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            abandoned = not pump.done()
            watch.cancel()
            pump.cancel()
            await asyncio.gather(watch, pump, return_exceptions=True)
        exc = None if abandoned else pump.exception()
        # A write that fails (ASGI spec 2.4 servers raise OSError) also means the client left.
        if abandoned or isinstance(exc, OSError):
            self.state.cancelled_streams += 1
        elif exc is not None:
            raise exc
        else:
            self.state.completed_streams += 1

    async def _pump(self, send: Send) -> None:
        async with aclosing(self.chunks) as chunks:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
