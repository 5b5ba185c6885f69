"""Settings in, providers out: the one place that knows every vendor.

The choice is made once at startup and never fails: a provider that is asked for but cannot
work (say, `PARLEY_LLM=workers-ai` without a token) is still built, and each of its calls raises
`ProviderNotConfigured` naming the variable to set, so the server starts and the UI can say so.
Vendor modules are imported only when picked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

from parley.config import Settings
from parley.providers.llm import ChatProvider
from parley.providers.stt import STTProvider
from parley.providers.tts import TTSProvider
from parley.providers.unconfigured import UnconfiguredChat, UnconfiguredSTT, UnconfiguredTTS

if TYPE_CHECKING:
    from parley.providers.workers_ai import WorkersAIClient

Vendor = Literal["workers-ai", "openai", "none"]

_CF_VARS = ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN")


@dataclass(slots=True, frozen=True)
class _Choice:
    vendor: str
    because: str
    explicit: bool


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _cloudflare_missing(settings: Settings) -> list[str]:
    values = (settings.cloudflare_account_id, _secret(settings.cloudflare_api_token))
    return [name for name, value in zip(_CF_VARS, values, strict=True) if not value]


def _choose(
    explicit: str | None, setting: str, settings: Settings, base_urls: dict[str, str | None]
) -> _Choice:
    """Explicit wins; else Workers AI if fully configured; else the first base URL that is set."""
    if explicit is not None:
        return _Choice(explicit, f"{setting}={explicit}", explicit=True)
    if not _cloudflare_missing(settings):
        return _Choice("workers-ai", "CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN are set", explicit=False)
    for name, value in base_urls.items():
        if value:
            return _Choice("openai", f"{name} is set", explicit=False)
    return _Choice("none", "no model service is configured", explicit=False)


def _chat_choice(settings: Settings) -> _Choice:
    return _choose(settings.llm, "PARLEY_LLM", settings, {"PARLEY_LLM_BASE_URL": settings.llm_base_url})


def _stt_choice(settings: Settings) -> _Choice:
    base_urls = {"PARLEY_STT_BASE_URL": settings.stt_base_url, "PARLEY_LLM_BASE_URL": settings.llm_base_url}
    return _choose(settings.stt, "PARLEY_STT", settings, base_urls)


def _stt_openai_config(settings: Settings) -> tuple[str | None, str, str | None, str]:
    """(base URL, its variable, API key, its variable): speech falls back to the chat server's."""
    if settings.stt_base_url:
        base_url, base_var = settings.stt_base_url, "PARLEY_STT_BASE_URL"
    elif settings.llm_base_url:
        base_url, base_var = settings.llm_base_url, "PARLEY_LLM_BASE_URL"
    else:
        base_url, base_var = None, "PARLEY_STT_BASE_URL"
    if settings.stt_api_key is not None:
        key, key_var = _secret(settings.stt_api_key), "PARLEY_STT_API_KEY"
    elif settings.llm_api_key is not None:
        key, key_var = _secret(settings.llm_api_key), "PARLEY_LLM_API_KEY"
    else:
        key, key_var = None, "PARLEY_STT_API_KEY"
    return base_url, base_var, key, key_var


def build_chat(settings: Settings) -> ChatProvider:
    """The chat provider the settings ask for; see `describe_choice` for the rules."""
    choice = _chat_choice(settings)
    if choice.vendor == "workers-ai":
        from parley.providers.workers_ai import DEFAULT_CHAT_MODEL, WorkersAIChat

        return WorkersAIChat(_workers_ai_client(settings), model=settings.llm_model or DEFAULT_CHAT_MODEL)
    if choice.vendor == "openai":
        from parley.providers.openai import DEFAULT_BASE_URL, DEFAULT_CHAT_MODEL, OpenAIChat, OpenAIClient

        client = OpenAIClient(
            base_url=settings.llm_base_url or DEFAULT_BASE_URL,
            api_key=_secret(settings.llm_api_key),
            timeout=settings.provider_timeout,
            key_setting="PARLEY_LLM_API_KEY",
            base_url_setting="PARLEY_LLM_BASE_URL",
        )
        return OpenAIChat(client, model=settings.llm_model or DEFAULT_CHAT_MODEL)
    if choice.explicit:
        return UnconfiguredChat("Chat is switched off (PARLEY_LLM=none).")
    return UnconfiguredChat()


def build_stt(settings: Settings) -> STTProvider:
    """The speech-to-text provider the settings ask for; see `describe_choice` for the rules."""
    choice = _stt_choice(settings)
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
    if choice.explicit:
        return UnconfiguredSTT("Speech-to-text is switched off (PARLEY_STT=none).")
    return UnconfiguredSTT()


def _workers_ai_client(settings: Settings) -> WorkersAIClient:
    from parley.providers.workers_ai import WorkersAIClient

    return WorkersAIClient(
        account_id=settings.cloudflare_account_id,
        api_token=_secret(settings.cloudflare_api_token),
        base_url=settings.workers_ai_base_url,
        timeout=settings.provider_timeout,
    )


def describe_choice(settings: Settings) -> list[str]:
    """Human lines saying which providers were picked and why (for startup logs and `parley config`).

    Never contains a token or key, only the names of the variables involved.
    """
    lines: list[str] = []
    missing_cf = _cloudflare_missing(settings)
    for capability, choice in (("chat", _chat_choice(settings)), ("speech-to-text", _stt_choice(settings))):
        chat = capability == "chat"
        model_var = "PARLEY_LLM_MODEL" if chat else "PARLEY_STT_MODEL"
        if choice.vendor == "none":
            if choice.explicit:
                lines.append(f"{capability}: off, because {choice.because}")
            else:
                fix = "PARLEY_LLM_BASE_URL" if chat else "PARLEY_STT_BASE_URL or PARLEY_LLM_BASE_URL"
                lines.append(
                    f"{capability}: none, because {choice.because}; set CLOUDFLARE_ACCOUNT_ID and "
                    f"CLOUDFLARE_API_TOKEN for Workers AI, or {fix} for an OpenAI-compatible server"
                )
                if len(missing_cf) == 1:
                    lines.append(
                        f"{capability}: note: Workers AI was not picked because {missing_cf[0]} is unset"
                    )
            continue
        model, where, key_var, has_key = _vendor_details(settings, choice.vendor, chat)
        lines.append(f"{capability}: {choice.vendor}, model {model}{where}, because {choice.because}")
        if (settings.llm_model if chat else settings.stt_model) is None:
            lines[-1] += f" (default model; set {model_var} to change it)"
        if choice.vendor == "workers-ai" and missing_cf:
            lines.append(
                f"{capability}: warning: {' and '.join(missing_cf)} not set; every call fails until it is"
            )
        if choice.vendor == "openai" and "api.openai.com" in where and not has_key:
            lines.append(f"{capability}: warning: api.openai.com needs an API key; set {key_var}")
    return lines


def _vendor_details(settings: Settings, vendor: str, chat: bool) -> tuple[str, str, str, bool]:
    """(model, " at <url>" or "", key variable, whether a key is set) for one picked vendor."""
    if vendor == "workers-ai":
        from parley.providers.workers_ai import DEFAULT_CHAT_MODEL as WAI_CHAT
        from parley.providers.workers_ai import DEFAULT_STT_MODEL as WAI_STT

        model = (settings.llm_model or WAI_CHAT) if chat else (settings.stt_model or WAI_STT)
        return model, "", "CLOUDFLARE_API_TOKEN", True
    from parley.providers.openai import DEFAULT_BASE_URL, DEFAULT_CHAT_MODEL, DEFAULT_STT_MODEL

    if chat:
        base_url = settings.llm_base_url or DEFAULT_BASE_URL
        return (
            settings.llm_model or DEFAULT_CHAT_MODEL,
            f" at {base_url}",
            "PARLEY_LLM_API_KEY",
            settings.llm_api_key is not None,
        )
    stt_url, _, key, key_var = _stt_openai_config(settings)
    return settings.stt_model or DEFAULT_STT_MODEL, f" at {stt_url or DEFAULT_BASE_URL}", key_var, bool(key)


def build_tts(settings: Settings) -> TTSProvider:
    """Text-to-speech; local voices arrive with the local models work."""
    return UnconfiguredTTS()
