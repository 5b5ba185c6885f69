"""Settings in, providers out: the one place that builds every vendor.

Which vendor serves each capability is decided in `selection.py` (explicit setting first, else
the first usable in a fixed order). The build never fails: a provider that is asked for but
cannot work (say, `PARLEY_LLM=workers-ai` without a token) is still built, and each of its calls
raises `ProviderNotConfigured` naming what to set, so the server starts and the UI can say so.
Vendor modules are imported only when picked, and no provider loads a model here: loading
happens on first use (or in the vendor's `load()`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from parley.config import Settings
from parley.errors import ParleyError
from parley.providers.llm import ChatProvider
from parley.providers.selection import (
    ORDER,
    Capability,
    Checks,
    Choice,
    DoctorRow,
    choose,
    cloudflare_missing,
    doctor,
    secret,
)
from parley.providers.stt import STTProvider
from parley.providers.tts import TTSProvider
from parley.providers.unconfigured import (
    CHAT_HINT,
    STT_HINT,
    TTS_HINT,
    UnconfiguredChat,
    UnconfiguredSTT,
    UnconfiguredTTS,
)
from parley.providers.vad import SpeechModel

if TYPE_CHECKING:
    from parley.providers.openai import OpenAIClient
    from parley.providers.workers_ai import WorkersAIClient

__all__ = [
    "DoctorRow",
    "build_chat",
    "build_stt",
    "build_tts",
    "build_vad",
    "describe_choice",
    "doctor",
]

log = logging.getLogger(__name__)


def _passed_over(choice: Choice) -> str:
    return " ".join(f"{vendor}: {reason}." for vendor, reason in choice.passed if "not set" not in reason)


def build_chat(settings: Settings) -> ChatProvider:
    """The chat provider the settings ask for; see `selection.py` for the rules."""
    choice = choose("chat", settings)
    if choice.vendor == "workers-ai":
        from parley.providers.workers_ai import DEFAULT_CHAT_MODEL, WorkersAIChat

        return WorkersAIChat(_workers_ai_client(settings), model=settings.llm_model or DEFAULT_CHAT_MODEL)
    if choice.vendor == "openai":
        from parley.providers.openai import DEFAULT_CHAT_MODEL, OpenAIChat

        return OpenAIChat(_llm_openai_client(settings), model=settings.llm_model or DEFAULT_CHAT_MODEL)
    if choice.vendor == "ollama":
        from parley.providers.ollama.chat import OllamaChat, ollama_client

        client = ollama_client(settings.ollama_url, timeout=settings.provider_timeout)
        return OllamaChat(client, ollama_url=settings.ollama_url, model=settings.llm_model)
    if choice.vendor == "llama-cpp":
        from parley.providers import llama_cpp

        return llama_cpp.build(settings)
    if choice.explicit:
        return UnconfiguredChat("Chat is switched off (PARLEY_LLM=none).")
    return UnconfiguredChat(f"{CHAT_HINT} {_passed_over(choice)}".strip())


def build_stt(settings: Settings) -> STTProvider:
    """The speech-to-text provider the settings ask for; see `selection.py` for the rules."""
    choice = choose("speech-to-text", settings)
    if choice.vendor == "workers-ai":
        from parley.providers.workers_ai import DEFAULT_STT_MODEL, WorkersAISTT

        return WorkersAISTT(_workers_ai_client(settings), model=settings.stt_model or DEFAULT_STT_MODEL)
    if choice.vendor == "openai":
        from parley.providers.openai import DEFAULT_BASE_URL, DEFAULT_STT_MODEL, OpenAIClient, OpenAISTT

        base_url, base_var, key, key_var = _stt_openai_config(settings)
        client = OpenAIClient(
            base_url=base_url or DEFAULT_BASE_URL,
            api_key=key,
            timeout=settings.provider_timeout,
            key_setting=key_var,
            base_url_setting=base_var,
        )
        return OpenAISTT(client, model=settings.stt_model or DEFAULT_STT_MODEL)
    if choice.vendor == "faster-whisper":
        from parley.models import ModelLocator
        from parley.models.catalog import DEFAULT_WHISPER
        from parley.providers.faster_whisper import FasterWhisperSTT

        locator = ModelLocator.from_settings(settings, progress=True)
        size = settings.stt_model or DEFAULT_WHISPER
        try:
            return FasterWhisperSTT(
                locator, model=size, language=settings.stt_language, max_seconds=settings.max_audio_seconds
            )
        except ParleyError as exc:  # an unknown model size
            return UnconfiguredSTT(exc.message)
    if choice.vendor == "pocketsphinx":
        from parley.providers.pocketsphinx import PocketSphinxSTT

        return PocketSphinxSTT(max_seconds=settings.max_audio_seconds, max_bytes=settings.max_audio_bytes)
    if choice.explicit:
        return UnconfiguredSTT("Speech-to-text is switched off (PARLEY_STT=none).")
    return UnconfiguredSTT(f"{STT_HINT} {_passed_over(choice)}".strip())


def build_tts(settings: Settings) -> TTSProvider:
    """The text-to-speech provider the settings ask for; see `selection.py` for the rules."""
    choice = choose("text-to-speech", settings)
    if choice.vendor == "piper":
        from parley.models import ModelLocator
        from parley.providers.espeak import EspeakTTS
        from parley.providers.piper import PiperTTS

        locator = ModelLocator.from_settings(settings, progress=True)
        # offline, a language with no Piper voice here is spoken by espeak-ng if it is installed
        espeak = EspeakTTS()
        try:
            return PiperTTS(
                locator,
                voice=settings.tts_voice,
                default_voice=locator.default_voice(),
                fallback=espeak if espeak.binary is not None else None,
            )
        except ParleyError as exc:  # a malformed voice name
            return UnconfiguredTTS(exc.message)
    if choice.vendor == "espeak":
        from parley.providers.espeak import DEFAULT_VOICE, EspeakTTS

        return EspeakTTS(voice=settings.tts_voice or DEFAULT_VOICE)
    if choice.vendor == "workers-ai":
        from parley.providers.workers_ai.tts import DEFAULT_TTS_MODEL, WorkersAITTS

        return WorkersAITTS(
            _workers_ai_client(settings),
            model=settings.tts_model or DEFAULT_TTS_MODEL,
            voice=settings.tts_voice,
        )
    if choice.vendor == "openai":
        from parley.providers.openai.tts import DEFAULT_TTS_MODEL, DEFAULT_TTS_VOICE, OpenAITTS

        return OpenAITTS(
            _llm_openai_client(settings),
            model=settings.tts_model or DEFAULT_TTS_MODEL,
            voice=settings.tts_voice or DEFAULT_TTS_VOICE,
        )
    if choice.explicit:
        return UnconfiguredTTS("Text-to-speech is switched off (PARLEY_TTS=none).")
    return UnconfiguredTTS(f"{TTS_HINT} {_passed_over(choice)}".strip())


def build_vad(settings: Settings) -> SpeechModel | None:
    """The voice activity model, or None when none can run here (voice input is then unavailable).

    Unlike the others this loads its model now: both detectors ship their weights in their
    wheel and load in milliseconds, and a broken install is better found at start-up.
    """
    choice = choose("voice activity", settings)
    try:
        if choice.vendor == "silero":
            from parley.providers import silero

            return silero.build()
        if choice.vendor == "webrtcvad":
            from parley.providers.webrtcvad import WebRTCVAD

            return WebRTCVAD()
    except (ParleyError, ImportError) as exc:
        log.warning("voice activity detection unavailable: %s", exc)
    return None


def _workers_ai_client(settings: Settings) -> WorkersAIClient:
    from parley.providers.workers_ai import WorkersAIClient

    return WorkersAIClient(
        account_id=settings.cloudflare_account_id,
        api_token=secret(settings.cloudflare_api_token),
        base_url=settings.workers_ai_base_url,
        timeout=settings.provider_timeout,
    )


def _llm_openai_client(settings: Settings) -> OpenAIClient:
    from parley.providers.openai import DEFAULT_BASE_URL, OpenAIClient

    return OpenAIClient(
        base_url=settings.llm_base_url or DEFAULT_BASE_URL,
        api_key=secret(settings.llm_api_key),
        timeout=settings.provider_timeout,
        key_setting="PARLEY_LLM_API_KEY",
        base_url_setting="PARLEY_LLM_BASE_URL",
    )


def _stt_openai_config(settings: Settings) -> tuple[str | None, str, str | None, str]:
    """(base URL, its variable, API key, its variable): speech falls back to the chat server's."""
    if settings.stt_base_url:
        base_url, base_var = settings.stt_base_url, "PARLEY_STT_BASE_URL"
    elif settings.llm_base_url:
        base_url, base_var = settings.llm_base_url, "PARLEY_LLM_BASE_URL"
    else:
        base_url, base_var = None, "PARLEY_STT_BASE_URL"
    if settings.stt_api_key is not None:
        key, key_var = secret(settings.stt_api_key), "PARLEY_STT_API_KEY"
    elif settings.llm_api_key is not None:
        key, key_var = secret(settings.llm_api_key), "PARLEY_LLM_API_KEY"
    else:
        key, key_var = None, "PARLEY_STT_API_KEY"
    return base_url, base_var, key, key_var


def describe_choice(settings: Settings) -> list[str]:
    """Human lines saying which provider serves each capability and why (printed by `parley serve`).

    Never contains a token or key, only the names of the variables involved.
    """
    lines: list[str] = []
    missing_cf = cloudflare_missing(settings)
    checks = Checks(settings)
    for capability in ORDER:
        choice = choose(capability, settings, checks)
        if choice.vendor == "none":
            lines.append(f"{capability}: {_none_line(capability, choice)}")
        else:
            details, model_var = _details(capability, choice.vendor, settings)
            lines.append(f"{capability}: {choice.vendor}{details}, because {choice.because}")
            if model_var is not None:
                lines[-1] += f" (default model; set {model_var} to change it)"
        # Why local engines earlier in the order were passed over: "not set" reasons say nothing new.
        for vendor, reason in choice.passed:
            if "not set" not in reason:
                lines.append(f"{capability}: note: {vendor} passed over: {reason}")
        half_cf = len(missing_cf) == 1 and "workers-ai" in ORDER[capability]
        if half_cf and not choice.explicit and choice.vendor != "workers-ai":
            lines.append(f"{capability}: note: Workers AI was not picked because {missing_cf[0]} is unset")
        if choice.explicit and choice.vendor != "none":
            lines += _warnings(capability, choice.vendor, settings, checks)
    return lines


def _none_line(capability: Capability, choice: Choice) -> str:
    if choice.explicit:
        return f"off, because {choice.because}"
    if capability == "voice activity":
        return "none, because neither silero nor webrtcvad is installed: pip install 'parley[local]'"
    if capability == "text-to-speech":
        return f"none, because no usable provider was found; {TTS_HINT}"
    fix = "PARLEY_LLM_BASE_URL" if capability == "chat" else "PARLEY_STT_BASE_URL or PARLEY_LLM_BASE_URL"
    return (
        "none, because no model service is configured and no local model is usable; set "
        f"CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN for Workers AI, or {fix} for an "
        "OpenAI-compatible server"
    )


def _warnings(capability: Capability, vendor: str, settings: Settings, checks: Checks) -> list[str]:
    """What will go wrong with an explicitly chosen provider, said at start-up rather than per call."""
    available = checks(capability, vendor)
    if vendor == "workers-ai" and not available.usable:
        return [f"{capability}: warning: {available.reason}; every call fails until it is"]
    if vendor == "openai":
        where, has_key, key_var = _openai_target(capability, settings)
        if "api.openai.com" in where and not has_key:
            return [f"{capability}: warning: api.openai.com needs an API key; set {key_var}"]
        return []
    if not available.usable:
        return [f"{capability}: warning: {vendor} is not usable here: {available.reason}"]
    return []


def _openai_target(capability: Capability, settings: Settings) -> tuple[str, bool, str]:
    """(base URL, whether a key is set, the key's variable) of the OpenAI-compatible server used."""
    from parley.providers.openai import DEFAULT_BASE_URL

    if capability == "speech-to-text":
        url, _, key, key_var = _stt_openai_config(settings)
        return url or DEFAULT_BASE_URL, bool(key), key_var
    return settings.llm_base_url or DEFAULT_BASE_URL, settings.llm_api_key is not None, "PARLEY_LLM_API_KEY"


def _details(capability: Capability, vendor: str, settings: Settings) -> tuple[str, str | None]:
    """(", model X at URL"-style details, the model variable when its default is in use)."""
    chat = capability == "chat"
    if capability == "voice activity":
        if vendor != "silero":
            return "", None
        from parley.providers.silero import backend

        return (f", on {backend()}" if backend() else ""), None
    if vendor == "workers-ai":
        from parley.providers import workers_ai

        if capability == "text-to-speech":
            from parley.providers.workers_ai.tts import DEFAULT_TTS_MODEL

            return f", model {settings.tts_model or DEFAULT_TTS_MODEL}", None
        configured = settings.llm_model if chat else settings.stt_model
        default = workers_ai.DEFAULT_CHAT_MODEL if chat else workers_ai.DEFAULT_STT_MODEL
        return f", model {configured or default}", None if configured else _model_var(chat)
    if vendor == "openai":
        from parley.providers import openai

        where = f" at {_openai_target(capability, settings)[0]}"
        if capability == "text-to-speech":
            from parley.providers.openai.tts import DEFAULT_TTS_MODEL

            return f", model {settings.tts_model or DEFAULT_TTS_MODEL}{where}", None
        configured = settings.llm_model if chat else settings.stt_model
        default = openai.DEFAULT_CHAT_MODEL if chat else openai.DEFAULT_STT_MODEL
        return f", model {configured or default}{where}", None if configured else _model_var(chat)
    if vendor == "ollama":
        model = settings.llm_model or "the first model it has pulled"
        return f", model {model} at {settings.ollama_url}", None
    if vendor == "llama-cpp":
        from parley.providers.llama_cpp import model_source

        return f", model {model_source(settings)[0]}", None
    if vendor == "faster-whisper":
        from parley.models.catalog import DEFAULT_WHISPER

        return f", model {settings.stt_model or DEFAULT_WHISPER}", None
    if vendor == "piper":
        from parley.models import ModelLocator

        default = ModelLocator.from_settings(settings, progress=False).default_voice()
        return f", voice {settings.tts_voice or default}", None
    if vendor == "espeak":
        return (f", voice {settings.tts_voice}" if settings.tts_voice else ", default voice"), None
    return "", None


def _model_var(chat: bool) -> str:
    return "PARLEY_LLM_MODEL" if chat else "PARLEY_STT_MODEL"
