"""Piper: natural-sounding local speech (VITS voices run by onnxruntime), a voice per language.

Voices (.onnx + .onnx.json, 20-120 MB) come from the `ModelLocator` (a pulled voice, the bundled
en_US-joe-medium, else a download on first use) and stay in memory once loaded, one per voice. Piper's own `synthesize` already yields one
chunk per sentence, which is exactly the streaming grain a voice reply wants: each sentence is
produced in a worker thread and handed over before the next starts, so the first sentence plays
while the rest are still being made and cancelling the consumer stops after the current one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from parley.errors import InvalidInput, ProviderError, ProviderUnavailable
from parley.models.bundled import BUNDLED
from parley.models.catalog import DEFAULT_PIPER_VOICE, piper_voice, voice_for_language
from parley.models.locate import ModelLocator
from parley.providers.tts import AudioChunk, TTSProvider

if TYPE_CHECKING:
    from piper import AudioChunk as PiperChunk
    from piper import PiperVoice

log = logging.getLogger(__name__)

INSTALL_HINT = "piper-tts is not installed: pip install 'parley[piper]'"


def choose_voice(
    configured: str | None, voice: str | None, language: str | None, default: str = DEFAULT_PIPER_VOICE
) -> str:
    """The voice for one request: the asked-for one; else the configured one if it speaks
    `language` (or no language is given); else the default (the voice this machine has) if it
    speaks `language`; else the catalog's voice for `language`."""
    if voice:
        return voice
    if configured and (not language or _speaks(configured, language)):
        return configured
    if language and not _speaks(default, language):
        return voice_for_language(language)
    return configured or default


def _open_voice(path: Path) -> PiperVoice:
    """`PiperVoice.load` with onnxruntime's session set for a shared CPU: half the cores and no
    spinning. By default onnxruntime takes every core and its idle threads spin between
    operators, which on 2 cores fights the LLM writing the rest of the reply at the same time.
    Measured on 2 busy cores (4 replies' first sentences, 16 runs each): 159 ms p50 / 342 ms max
    by default, 132 / 160 ms with one thread and no spinning."""
    import onnxruntime  # type: ignore[import-untyped]
    from piper import PiperConfig, PiperVoice

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max((os.cpu_count() or 1) // 2, 1)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(config=config, session=session)


def _speaks(voice: str, language: str) -> bool:
    # "en_US-lessac-medium" speaks "en", "en-US" and "en_us"; not "en-GB".
    locale = voice.split("-", 1)[0].lower()
    tag = language.replace("-", "_").lower()
    return locale == tag or locale.split("_")[0] == tag


class PiperTTS(TTSProvider):
    """`voice` is the configured default (PARLEY_TTS_VOICE); None means by language, else
    `default_voice` (the locator's: a pulled catalogue voice, else the bundled one).

    A language whose Piper voice is not here and cannot be fetched (offline) is spoken by
    `fallback` (espeak-ng, robotic but in ~100 languages) when it speaks that language, else by
    the default voice; every chunk names the voice that spoke it.
    """

    name = "piper"

    def __init__(
        self,
        locator: ModelLocator,
        *,
        voice: str | None = None,
        default_voice: str = DEFAULT_PIPER_VOICE,
        length_scale: float = 1.0,
        fallback: TTSProvider | None = None,
    ) -> None:
        if voice is not None and voice not in BUNDLED:
            piper_voice(voice)  # a malformed name fails at start-up, not on the first reply
        self.configured = voice
        self.default_voice = default_voice
        self.voice = voice or default_voice
        self.locator = locator
        self.length_scale = length_scale
        self.fallback = fallback
        self._voices: dict[str, PiperVoice] = {}
        self._loading = asyncio.Lock()

    async def load(self, name: str) -> PiperVoice:
        """Download (first time) and load voice `name`; synthesis does this on demand."""
        async with self._loading:
            loaded = self._voices.get(name)
            if loaded is None:
                loaded = self._voices[name] = await asyncio.to_thread(self._load, name)
            return loaded

    def _load(self, name: str) -> PiperVoice:
        try:
            import piper  # noqa: F401 (the install hint, before any download)
        except ImportError as exc:
            raise ProviderUnavailable(INSTALL_HINT, field="PARLEY_TTS") from exc
        path = self.locator.fetch(name)
        log.info("loading piper voice %s from %s", name, path)
        try:
            return _open_voice(path)
        except Exception as exc:
            # onnxruntime raises its own classes (InvalidProtobuf, Fail) straight from Exception,
            # the config reader raises ValueError/KeyError: all mean "these files are not a voice".
            # The path (and onnxruntime's words, which quote it) go to the log only: this
            # message reaches browsers, which must never see the server's paths.
            log.error("cannot load piper voice %s from %s: %s: %s", name, path, type(exc).__name__, exc)
            raise ProviderUnavailable(
                f"cannot load piper voice {name} ({type(exc).__name__}; the server's log names its "
                "folder); the files may be damaged: delete that folder to download them again",
                field="PARLEY_TTS_VOICE",
            ) from exc

    async def warm_up(self) -> None:
        piper = await self.load(self.voice)
        # The first synthesis of a voice also sets up onnxruntime's session buffers.
        await asyncio.to_thread(self._next, self._sentences(piper, "Hello."))

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        name = choose_voice(self.configured, voice, language, self.default_voice)
        try:
            piper = await self.load(name)
        except ProviderUnavailable as exc:
            if voice is not None or name == self.default_voice:
                raise
            # The language's voice is neither pulled nor downloadable here (offline): a voice that
            # speaks the language, else the one this machine has; the chunks say which one spoke.
            if language and self.fallback is not None:
                spoken = False
                try:
                    async for piece in self.fallback.synthesize(text, language=language):
                        spoken = True
                        yield piece
                    log.warning("no voice %s here (%s); spoke with %s", name, exc.message, self.fallback.name)
                    return
                except InvalidInput:  # the fallback does not speak it either
                    if spoken:
                        raise
            log.warning("no voice %s here (%s); speaking with %s", name, exc.message, self.default_voice)
            name, piper = self.default_voice, await self.load(self.default_voice)
        sentences = self._sentences(piper, text)
        while True:
            chunk = await asyncio.to_thread(self._next, sentences)
            if chunk is None:
                return
            yield AudioChunk(chunk.pcm, chunk.sample_rate, name)

    def _sentences(self, piper: PiperVoice, text: str) -> Iterator[PiperChunk]:
        # A generator: nothing runs until the first `next`, which happens in the worker thread.
        from piper import SynthesisConfig

        return iter(piper.synthesize(text, SynthesisConfig(length_scale=self.length_scale)))

    @staticmethod
    def _next(sentences: Iterator[PiperChunk]) -> AudioChunk | None:
        try:
            piece = next(sentences, None)
        except Exception as exc:
            raise ProviderError(f"piper failed to synthesise: {type(exc).__name__}: {exc}") from exc
        if piece is None:
            return None
        return AudioChunk(piece.audio_int16_bytes, piece.sample_rate)
