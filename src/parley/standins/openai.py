"""A local OpenAI-compatible server: chat completions (streamed or not), transcriptions, models.

It writes the chunk format of OpenAI's API (role chunk, content chunks, finish chunk, a usage
chunk with empty `choices` when `stream_options.include_usage` is set, then `[DONE]`) and its
error JSON, so `OpenAIChat` and `OpenAISTT` run unchanged against it:

    app = create_app(api_key="k")
    with BackgroundServer(app) as server:
        client = OpenAIClient(base_url=server.url + "/v1", api_key="k")

With `holds=Holds()`, a streamed reply to a message containing `#hold:NAME` (or the next streamed
reply at all, after `holds.hold_next("NAME")`) sends its first tokens, then waits until the test
calls `holds.release("NAME")`; `await holds.started("NAME")`
returns once those first tokens were handed to the client, `await holds.abandoned("NAME")` once the
client went away from the held reply. The test may run in another thread and
event loop than the stand-in (a `BackgroundServer`), so no test needs a sleep to catch a reply
mid-stream.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Collection
from concurrent.futures import Future
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from parley.standins.common import (
    StreamAborted,
    TrackedStream,
    Triggers,
    init_state,
    last_user_text,
    mark_first_token,
    pause,
    quiet_aborts,
    record,
    reply_text,
    sse,
    tokens_of,
    tool_call_in,
    transcript_of,
    triggers_in,
    triggers_in_audio,
)

DEFAULT_MODELS = ("gpt-4o-mini", "whisper-1")
_HOLD = re.compile(r"#hold:([\w-]+)")
#: tokens a held reply streams before it waits
HELD_AFTER = 2


class _Signal:
    """A flag set once from any thread and awaited from any event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._waiters: list[Future[None]] = []

    def set(self) -> None:
        with self._lock:
            self._set = True
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        with self._lock:
            if self._set:
                return
            # a thread-safe future, wrapped into whichever loop awaits it
            waiter: Future[None] = Future()
            self._waiters.append(waiter)
        await asyncio.wrap_future(waiter)


class Holds:
    """Replies held mid-stream by name (`#hold:NAME` in the user message), for tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[str, _Signal] = {}
        self._released: dict[str, _Signal] = {}
        self._abandoned: dict[str, _Signal] = {}
        self._all_released = False
        self._next: list[str] = []

    def _signal(self, table: dict[str, _Signal], name: str) -> _Signal:
        with self._lock:
            signal = table.setdefault(name, _Signal())
            if table is self._released and self._all_released:
                signal.set()
            return signal

    async def started(self, name: str) -> None:
        """Until a reply held as `name` has streamed its first tokens and waits."""
        await self._signal(self._started, name).wait()

    def has_started(self, name: str) -> bool:
        return self._signal(self._started, name).is_set()

    def hold_next(self, name: str) -> None:
        """Hold the next streamed reply as `name`, whatever its message says (a voice turn's text
        is a transcript, which carries no `#hold:`)."""
        with self._lock:
            self._next.append(name)

    def take_next(self) -> str | None:
        with self._lock:
            return self._next.pop(0) if self._next else None

    def release(self, name: str) -> None:
        """Let the reply held as `name` (now or later) stream the rest of its tokens."""
        self._signal(self._released, name).set()

    def release_all(self) -> None:
        """Release every hold, present and future (a test's teardown: nothing stays held)."""
        with self._lock:
            self._all_released = True
            signals = list(self._released.values())
        for signal in signals:
            signal.set()

    async def abandoned(self, name: str) -> None:
        """Until the client of the reply held as `name` went away while it was held."""
        await self._signal(self._abandoned, name).wait()

    async def hold(self, name: str) -> None:
        """The stand-in's side: say the reply is held, then wait for its release."""
        self._signal(self._started, name).set()
        try:
            await self._signal(self._released, name).wait()
        except asyncio.CancelledError:  # the client left (TrackedStream cancels the stream)
            self._signal(self._abandoned, name).set()
            raise


# (status, message, type, code) of OpenAI's error answers, by the `#error:` trigger that asks for them.
_ERRORS: dict[str, tuple[int, str, str, str | None]] = {
    "400": (400, "Invalid request.", "invalid_request_error", None),
    "401": (401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    "403": (403, "You are not allowed to sample from this model.", "invalid_request_error", None),
    "404": (
        404,
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    "429": (429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    "insufficient_quota": (
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    ),
    "500": (
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    "503": (503, "The engine is currently overloaded, please try again later.", "server_error", None),
}


def error(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def triggered_error(trigger: str, echo: str | None = None) -> JSONResponse:
    """The error a `#error:` trigger asks for; `echo` (a presented API key) is quoted in its text."""
    status, message, type_, code = _ERRORS.get(
        trigger, (int(trigger) if trigger.isdigit() else 500, "Error.", "server_error", None)
    )
    if echo is not None:
        message = f"{message} Incorrect API key provided: {echo}."
    return error(status, message, type_, code)


def presented_key(request: Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


def create_app(
    *,
    api_key: str | None = None,
    first_token_delay: float = 0.0,
    token_interval: float = 0.0,
    models: Collection[str] = DEFAULT_MODELS,
    echo_key: bool = False,
    holds: Holds | None = None,
) -> Starlette:
    """An OpenAI-compatible stand-in; base URL for clients is `<server url>/v1`.

    `api_key=None` accepts any request, as Ollama does. `echo_key=True` quotes the API key the
    request carried in every error's message, as careless servers and proxies do (the client
    must keep it from its users). State for tests: `requests`, `cancelled_streams`,
    `completed_streams`, `first_byte_times`. `holds` enables `#hold:NAME` (see the module's doc).
    """
    quiet_aborts()

    def refused(request: Request) -> JSONResponse | None:
        if api_key is None:
            return None
        header = request.headers.get("authorization", "")
        if not header:
            return error(401, "You didn't provide an API key.", "invalid_request_error")
        if not hmac.compare_digest(header, f"Bearer {api_key}"):
            quoted = f": {presented_key(request)}." if echo_key else "."
            return error(
                401, f"Incorrect API key provided{quoted}", "invalid_request_error", "invalid_api_key"
            )
        return None

    def unknown_model(model: Any) -> JSONResponse | None:
        if model in models:
            return None
        message = f"The model `{model}` does not exist or you do not have access to it."
        return error(404, message, "invalid_request_error", "model_not_found")

    async def chat_completions(request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        record(request, model=payload.get("model") if isinstance(payload, dict) else None, json=payload)
        if (answer := refused(request)) is not None:
            return answer
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            return error(400, "'messages' is a required property", "invalid_request_error", param="messages")
        if (answer := unknown_model(payload.get("model"))) is not None:
            return answer
        said = last_user_text(payload["messages"])
        triggers = triggers_in(said)
        if triggers.error is not None:
            return triggered_error(triggers.error, presented_key(request) if echo_key else None)
        limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
        tokens = tokens_of(reply_text(payload["messages"]))
        truncated = isinstance(limit, int) and len(tokens) > limit
        tokens = tokens[:limit] if isinstance(limit, int) else tokens
        prompt = sum(
            len(tokens_of(str(m.get("content", "")))) for m in payload["messages"] if isinstance(m, dict)
        )
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(tokens),
            "total_tokens": prompt + len(tokens),
        }
        head = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "created": int(time.time()),
            "model": payload["model"],
        }
        finish = "length" if truncated else "stop"
        if (called := tool_call_in(payload)) is not None:
            return await tool_reply(request, head, called, payload, first_token_delay + triggers.sleep)
        if not payload.get("stream"):
            await pause(request, first_token_delay + triggers.sleep)
            message = {"role": "assistant", "content": "".join(tokens)}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return JSONResponse(head | {"object": "chat.completion", "choices": [choice], "usage": usage})
        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        held = _HOLD.search(said) if holds is not None else None
        hold = held.group(1) if held is not None else holds.take_next() if holds is not None else None
        chunks = stream(request, head, tokens, finish, usage if include_usage else None, triggers, hold)
        return TrackedStream(request.app.state, chunks)

    async def stream(
        request: Request,
        head: dict[str, Any],
        tokens: list[str],
        finish: str,
        usage: dict[str, int] | None,
        triggers: Triggers,
        hold: str | None = None,
    ) -> AsyncGenerator[bytes, None]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            body = head | {"object": "chat.completion.chunk", "choices": [choice]}
            # With include_usage, every chunk but the last says `"usage": null`.
            return sse(body | {"usage": None} if usage is not None else body)

        await asyncio.sleep(first_token_delay + triggers.sleep)
        yield chunk({"role": "assistant", "content": ""})
        for index, token in enumerate(tokens):
            if index:
                await asyncio.sleep(token_interval)
            if triggers.fail_midstream and index == 2:
                raise StreamAborted
            if index == 0:
                mark_first_token(request.app.state)
            yield chunk({"content": token})
            if hold is not None and holds is not None and index == min(HELD_AFTER, len(tokens)) - 1:
                await holds.hold(hold)
        yield chunk({}, finish)
        if usage is not None:
            yield sse(head | {"object": "chat.completion.chunk", "choices": [], "usage": usage})
        yield sse("[DONE]")

    async def tool_reply(
        request: Request, head: dict[str, Any], called: tuple[str, str], payload: dict[str, Any], delay: float
    ) -> Response:
        """A reply that calls a tool: whole in a completion, or streamed as OpenAI streams one (the
        id and name first, then the arguments in pieces, then finish_reason "tool_calls")."""
        name, arguments = called
        call_id = f"call_{secrets.token_hex(8)}"
        function = {"name": name, "arguments": arguments}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        await pause(request, delay)
        if not payload.get("stream"):
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": function}],
            }
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
            return JSONResponse(head | {"object": "chat.completion", "choices": [choice], "usage": usage})

        async def chunks() -> AsyncGenerator[bytes, None]:
            def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                return sse(head | {"object": "chat.completion.chunk", "choices": [choice]})

            first = {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            yield chunk({"role": "assistant", "content": None, "tool_calls": [first]})
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            yield chunk({}, "tool_calls")
            yield sse(head | {"object": "chat.completion.chunk", "choices": [], "usage": usage})
            yield sse("[DONE]")

        return TrackedStream(request.app.state, chunks())

    async def transcriptions(request: Request) -> Response:
        form = await request.form()
        upload = form.get("file")
        audio = await upload.read() if isinstance(upload, UploadFile) else b""
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        record(
            request,
            model=fields.get("model"),
            form=fields,
            file={
                "filename": upload.filename if isinstance(upload, UploadFile) else None,
                "content_type": upload.content_type if isinstance(upload, UploadFile) else None,
                "bytes": len(audio),
            },
        )
        await form.close()
        if (answer := refused(request)) is not None:
            return answer
        if not isinstance(upload, UploadFile):
            return error(400, "'file' is a required property", "invalid_request_error", param="file")
        if (answer := unknown_model(fields.get("model"))) is not None:
            return answer
        triggers = triggers_in_audio(audio)
        if triggers.error is not None:
            return triggered_error(triggers.error)
        await pause(request, triggers.sleep)
        text = transcript_of(audio)
        response_format = fields.get("response_format", "json")
        if response_format == "text":
            return PlainTextResponse(text)
        if response_format == "verbose_json":
            duration = round(len(audio) / 32000, 3)
            language = fields.get("language") or "english"
            body = {"task": "transcribe", "language": language, "duration": duration, "text": text}
            return JSONResponse(body | {"segments": []})
        return JSONResponse({"text": text})

    async def list_models(request: Request) -> Response:
        record(request, model=None)
        if (answer := refused(request)) is not None:
            return answer
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "parley-standin"} for m in models]
        return JSONResponse({"object": "list", "data": data})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/v1/audio/speech", partial(speech, refused=refused), methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
        ]
    )
    init_state(app.state)
    return app


# -- text to speech: real audio (a tone as long as the text) in the response_format asked for ---
TTS_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
TTS_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}
)
# response_format -> (stand-in format, Content-Type); OpenAI's pcm is raw 24 kHz s16le.
_SPEECH_FORMATS = {
    "mp3": ("mp3", "audio/mpeg"),
    "opus": ("ogg", "audio/ogg"),
    "aac": ("m4a", "audio/aac"),
    "flac": ("flac", "audio/flac"),
    "wav": ("wav", "audio/wav"),
    "pcm": ("pcm", "audio/pcm"),
}


async def speech(request: Request, refused: Any) -> Response:
    """`/v1/audio/speech`: wav is sent with streaming placeholder sizes, as OpenAI does."""
    from parley.standins.speech import speech_audio, streamed_wav

    try:
        payload = await request.json()
    except ValueError:
        payload = None
    record(request, model=payload.get("model") if isinstance(payload, dict) else None, json=payload)
    if (answer := refused(request)) is not None:
        return answer  # type: ignore[no-any-return]
    if not isinstance(payload, dict) or not isinstance(payload.get("input"), str) or not payload["input"]:
        return error(400, "'input' is a required property", "invalid_request_error", param="input")
    if payload.get("model") not in TTS_MODELS:
        message = f"The model `{payload.get('model')}` does not exist or you do not have access to it."
        return error(404, message, "invalid_request_error", "model_not_found")
    if payload.get("voice") not in TTS_VOICES:
        return error(400, f"Invalid voice {payload.get('voice')!r}.", "invalid_request_error", param="voice")
    response_format = payload.get("response_format", "mp3")
    if response_format not in _SPEECH_FORMATS:
        return error(400, "Invalid response_format.", "invalid_request_error", param="response_format")
    triggers = triggers_in(payload["input"])
    if triggers.error is not None:
        return triggered_error(triggers.error)
    await pause(request, triggers.sleep)
    fmt, media_type = _SPEECH_FORMATS[response_format]
    data = await asyncio.to_thread(speech_audio, payload["input"], fmt, 48000 if fmt == "ogg" else 24000)
    return Response(streamed_wav(data) if fmt == "wav" else data, media_type=media_type)
