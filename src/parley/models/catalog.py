"""The models Parley knows how to fetch: where each lives on the hub, and which files make it.

Names are what `parley models pull NAME` takes: `faster-whisper-<size>`, a Piper voice name
(`en_US-lessac-medium`; any voice of rhasspy/piper-voices works, not only the listed ones, since
its path follows from the name) and the llama.cpp GGUF names below. Checksums are given only
where they are known for sure; a file without one is trusted once its size matches.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from parley.errors import NotFound

Kind = Literal["stt", "tts", "llm"]

DEFAULT_WHISPER = "base"
DEFAULT_PIPER_VOICE = "en_US-lessac-medium"
DEFAULT_GGUF = "qwen2.5-0.5b-instruct"

WHISPER_SIZES = (
    "tiny",
    "tiny.en",
    "base",
    "base.en",
    "small",
    "small.en",
    "medium",
    "medium.en",
    "large-v2",
    "large-v3",
)
_WHISPER_FILES = ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")
# large-v3 changed the mel bins and ships its vocabulary as JSON plus a preprocessor config.
_WHISPER_V3_FILES = (
    "config.json",
    "model.bin",
    "preprocessor_config.json",
    "tokenizer.json",
    "vocabulary.json",
)

PIPER_REPO = "rhasspy/piper-voices"
#: one good voice per language: what `voice_for_language` picks when no voice is set
PIPER_VOICES = {
    "en": "en_US-lessac-medium",
    "en-gb": "en_GB-alan-medium",
    "de": "de_DE-thorsten-medium",
    "fr": "fr_FR-siwis-medium",
    "es": "es_ES-davefx-medium",
    "it": "it_IT-riccardo-x_low",
    "nl": "nl_NL-mls-medium",
    "pt": "pt_BR-faber-medium",
    "pl": "pl_PL-darkman-medium",
    "ru": "ru_RU-irina-medium",
    "uk": "uk_UA-ukrainian_tts-medium",
    "zh": "zh_CN-huayan-medium",
}
_PIPER_NAME = re.compile(
    r"^(?P<lang>[a-z]{2,3})_(?P<region>[A-Z]{2})-(?P<speaker>[A-Za-z0-9_]+)-(?P<quality>x_low|low|medium|high)$"
)


@dataclass(slots=True, frozen=True)
class ModelFile:
    """One file of a model: its path inside the repository, and what it must hash to if known."""

    path: str
    sha256: str | None = None
    size: int | None = None


@dataclass(slots=True, frozen=True)
class ModelSpec:
    name: str
    kind: Kind
    repo: str
    files: tuple[ModelFile, ...]
    description: str
    #: the file a loader opens (Piper's .onnx, the GGUF); None when the loader takes the folder
    main: str | None = None


def whisper(size: str) -> ModelSpec:
    """The CTranslate2 conversion of Whisper `size` that faster-whisper loads from a folder."""
    if size not in WHISPER_SIZES:
        raise NotFound(
            f"unknown faster-whisper model {size!r}; known sizes: {', '.join(WHISPER_SIZES)}",
            field="PARLEY_STT_MODEL",
        )
    files = _WHISPER_V3_FILES if size == "large-v3" else _WHISPER_FILES
    return ModelSpec(
        name=f"faster-whisper-{size}",
        kind="stt",
        repo=f"Systran/faster-whisper-{size}",
        files=tuple(ModelFile(path) for path in files),
        description=f"Whisper {size} for faster-whisper (CTranslate2)",
    )


def piper_voice(name: str) -> ModelSpec:
    """Any voice of rhasspy/piper-voices by name: `<lang>_<REGION>-<speaker>-<quality>`."""
    match = _PIPER_NAME.match(name)
    if match is None:
        raise NotFound(
            f"{name!r} is not a Piper voice name (like {DEFAULT_PIPER_VOICE}: language_REGION-speaker-quality)",
            field="PARLEY_TTS_VOICE",
        )
    lang, region, speaker, quality = match.group("lang", "region", "speaker", "quality")
    folder = f"{lang}/{lang}_{region}/{speaker}/{quality}"
    onnx = f"{folder}/{name}.onnx"
    return ModelSpec(
        name=name,
        kind="tts",
        repo=PIPER_REPO,
        files=(ModelFile(onnx), ModelFile(f"{onnx}.json")),
        description=f"Piper voice {speaker} ({lang}_{region}, {quality} quality)",
        main=onnx,
    )


def voice_for_language(language: str | None) -> str:
    """The Piper voice for a BCP-47 tag (`de`, `en-GB`, `pt_BR`); the default voice if none fits."""
    if not language:
        return DEFAULT_PIPER_VOICE
    tag = language.replace("_", "-").lower()
    return PIPER_VOICES.get(tag) or PIPER_VOICES.get(tag.split("-")[0]) or DEFAULT_PIPER_VOICE


GGUF_MODELS = {
    "qwen2.5-0.5b-instruct": ModelSpec(
        name="qwen2.5-0.5b-instruct",
        kind="llm",
        repo="Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        files=(ModelFile("qwen2.5-0.5b-instruct-q4_k_m.gguf"),),
        description="Qwen2.5 0.5B Instruct, Q4_K_M (about 400 MB): fast on any CPU",
        main="qwen2.5-0.5b-instruct-q4_k_m.gguf",
    ),
    "llama-3.2-1b-instruct": ModelSpec(
        name="llama-3.2-1b-instruct",
        kind="llm",
        repo="bartowski/Llama-3.2-1B-Instruct-GGUF",
        files=(ModelFile("Llama-3.2-1B-Instruct-Q4_K_M.gguf"),),
        description="Llama 3.2 1B Instruct, Q4_K_M (about 800 MB): better answers, half the speed",
        main="Llama-3.2-1B-Instruct-Q4_K_M.gguf",
    ),
}


def known() -> list[ModelSpec]:
    """Every model `parley models pull` lists; Piper voices beyond these work by name too."""
    specs = [whisper(size) for size in WHISPER_SIZES]
    specs += [piper_voice(name) for name in dict.fromkeys(PIPER_VOICES.values())]
    specs += GGUF_MODELS.values()
    return specs


def lookup(name: str) -> ModelSpec:
    """The model called `name` (`faster-whisper-base`, `en_US-lessac-medium`, a GGUF name)."""
    if name.startswith("faster-whisper-"):
        return whisper(name.removeprefix("faster-whisper-"))
    if name in GGUF_MODELS:
        return GGUF_MODELS[name]
    if _PIPER_NAME.match(name):
        return piper_voice(name)
    names = ", ".join(spec.name for spec in known())
    raise NotFound(f"unknown model {name!r}; known models: {names}", field="name")


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
