"""Text-to-speech with the espeak-ng binary: robotic, but offline, instant and ~100 languages.

espeak-ng is a system package (apt-get install espeak-ng), not a wheel, so it runs as a child
process: text in on stdin (never argv, which has length limits and is visible in `ps`), a WAV
stream out on stdout, read and yielded as it is written. It synthesises about a thousand times
faster than real time, so the first chunk arrives in a few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections.abc import AsyncIterator

from parley.audio.pcm import WavStream
from parley.errors import InvalidInput, ProviderError, ProviderNotConfigured
from parley.providers.tts import AudioChunk, TTSProvider

log = logging.getLogger(__name__)

BINARY = "espeak-ng"
DEFAULT_VOICE = "en-us"
INSTALL_HINT = "espeak-ng is not installed: apt-get install espeak-ng (or brew install espeak-ng)"
#: a voice name, optionally with a variant (`en-us+f3`); nothing that could read as an option
_VOICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-/]{0,39}(\+[A-Za-z0-9_\-]{1,20})?$")
#: bare language codes whose best espeak voice is not the code itself
_PREFERRED = {"en": "en-us", "fr": "fr-fr", "zh": "cmn", "no": "nb"}
_READ = 8192


class EspeakTTS(TTSProvider):
    """Streams espeak-ng speech as 22,050 Hz mono PCM chunks.

    `voice` is the default voice (an espeak-ng language such as `en-us`, `de`, or with a
    variant, `en-us+f3`); a call's `voice` wins over it, and a call's `language` picks a voice
    when the call names none. `speed` is in words per minute. Cancelling the consumer kills the
    process.
    """

    name = "espeak"

    def __init__(self, *, voice: str = DEFAULT_VOICE, speed: int = 175, binary: str | None = None) -> None:
        self.voice = voice
        self.speed = speed
        self.binary = binary or shutil.which(BINARY)
        self._voices: frozenset[str] | None = None

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        binary = self._binary()
        chosen = await self._pick_voice(voice, language)
        if not text.strip():
            return
        try:
            proc = await self._start(binary, chosen)
        except OSError as exc:
            raise ProviderNotConfigured(
                f"{INSTALL_HINT} ({binary}: {exc.strerror})", field="PARLEY_TTS"
            ) from exc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr = asyncio.create_task(proc.stderr.read())
        try:
            proc.stdin.write(text.encode("utf-8"))
            await proc.stdin.drain()
            proc.stdin.close()
            wav = WavStream()
            while data := await proc.stdout.read(_READ):
                try:
                    pcm = wav.feed(data)
                except ValueError as exc:
                    raise ProviderError(f"espeak-ng wrote unreadable audio: {exc}") from exc
                if pcm:
                    assert wav.sample_rate is not None
                    yield AudioChunk(pcm, wav.sample_rate, f"espeak-ng {chosen}")
            code = await proc.wait()
            message = (await stderr).decode("utf-8", "replace").strip()
            if code != 0 or wav.sample_rate is None:
                raise self._failure(code, message, chosen)
        finally:
            # Reached on success, on error and when the consumer is cancelled or stops early.
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            stderr.cancel()
            await asyncio.gather(stderr, return_exceptions=True)

    async def _start(self, binary: str, voice: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            binary,
            "--stdout",
            "--stdin",
            "-b",
            "1",  # UTF-8 input
            "-v",
            voice,
            "-s",
            str(self.speed),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    def _binary(self) -> str:
        if self.binary is None:
            raise ProviderNotConfigured(INSTALL_HINT, field="PARLEY_TTS")
        return self.binary

    def _failure(self, code: int, message: str, voice: str) -> Exception:
        if "voice does not exist" in message.lower():
            return InvalidInput(f"espeak-ng has no voice {voice!r}", field="voice")
        return ProviderError(f"espeak-ng failed (exit {code}): {message or 'no message'}")

    async def _pick_voice(self, voice: str | None, language: str | None) -> str:
        if voice:
            if not _VOICE.match(voice):
                raise InvalidInput(f"voice {voice!r} is not an espeak-ng voice name", field="voice")
            return voice
        if not language:
            return self.voice
        code = language.strip().lower().replace("_", "-")
        if code == re.split(r"[-+]", self.voice)[0]:
            return self.voice  # `en` with the default `en-gb` keeps the configured accent
        voices = await self.voices()
        for candidate in (code, _PREFERRED.get(code), code.split("-")[0]):
            if candidate and candidate in voices:
                return candidate
        raise InvalidInput(
            f"espeak-ng has no voice for language {language!r}", field="language", limit="espeak-ng --voices"
        )

    async def voices(self) -> frozenset[str]:
        """The language codes espeak-ng speaks (`espeak-ng --voices`), read once."""
        if self._voices is None:
            binary = self._binary()
            try:
                proc = await asyncio.create_subprocess_exec(
                    binary, "--voices", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
                )
            except OSError as exc:
                raise ProviderNotConfigured(
                    f"{INSTALL_HINT} ({binary}: {exc.strerror})", field="PARLEY_TTS"
                ) from exc
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise ProviderError(f"espeak-ng --voices failed (exit {proc.returncode})")
            self._voices = parse_voices(out.decode("utf-8", "replace"))
        return self._voices


def parse_voices(listing: str) -> frozenset[str]:
    """Language codes from `espeak-ng --voices` (columns: Pty Language Age/Gender VoiceName File)."""
    codes = set()
    for line in listing.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            codes.add(parts[1].lower())
    return frozenset(codes)
