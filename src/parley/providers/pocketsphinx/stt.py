"""Speech-to-text with pocketsphinx: the offline fallback whose US-English model ships in its wheel.

Three modes, chosen at construction:

- open vocabulary (default): the wheel's n-gram language model. Rough (a fifth to two fifths of
  the words of synthetic speech come out wrong, depending on the codec) but needs no setup.
- grammar: a list of sentences compiled to a JSGF grammar; the result is always one of them,
  exact and fast (~25 ms a clip). For command-and-control and for tests.
- keyphrases: listens for the given phrases only (keyword spotting); the transcript is the
  phrases heard, in order.

Only English is recognised: a request for another language is refused with `InvalidInput`
naming `language` (rather than silently returning English guesses for, say, German speech).
The decoder is not thread-safe and holds ~50 MB, so there is one per provider, loaded on first
use in a worker thread, and recognitions take turns on it.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from parley.audio.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_SECONDS, decode_async
from parley.audio.pcm import SAMPLE_WIDTH, STT_RATE
from parley.errors import ConfigError, InvalidInput, ProviderError, ProviderNotConfigured
from parley.providers.stt import AudioInput, STTProvider, Transcript

if TYPE_CHECKING:
    from pocketsphinx import Decoder  # type: ignore[import-untyped]

Mode = Literal["open", "grammar", "keyphrase"]

#: clips up to this long are recognised in one call (~0.25 s of CPU per second of audio)
_WHOLE_BYTES = 30 * STT_RATE * SAMPLE_WIDTH
#: longer clips are fed in blocks this size; between blocks a cancelled request stops
_BLOCK = STT_RATE * SAMPLE_WIDTH // 2
_WORD = re.compile(r"[a-z0-9']+")
_SEARCH = "parley"
INSTALL_HINT = "pocketsphinx is not installed: pip install 'parley[local]'"


def words_of(sentence: str) -> list[str]:
    """The dictionary words of a sentence: lower case, punctuation dropped."""
    return _WORD.findall(sentence.lower())


def jsgf_from_sentences(sentences: Sequence[str]) -> str:
    """A JSGF grammar whose only public rule matches exactly one of `sentences`."""
    alternatives = [" ".join(words_of(s)) for s in sentences]
    alternatives = list(dict.fromkeys(a for a in alternatives if a))
    if not alternatives:
        raise ConfigError("the pocketsphinx grammar has no words", field="grammar")
    body = " | ".join(f"( {a} )" for a in alternatives)
    return f"#JSGF V1.0;\ngrammar {_SEARCH};\npublic <sentence> = {body};\n"


def is_english(language: str | None) -> bool:
    if language is None:
        return True
    code = language.strip().lower().replace("_", "-")
    return code == "en" or code.startswith("en-")


class PocketSphinxSTT(STTProvider):
    """Recognises whole recordings in any format `audio.decode` accepts (the upload as sent).

    `grammar` (sentences) or `keyphrases` switch from open vocabulary to those modes; giving
    both is a `ConfigError`. `keyphrase_threshold` trades misses for false alarms (pocketsphinx
    scale, 1e-50 eager .. 1e-5 strict). Words missing from the CMU dictionary are reported as a
    `ConfigError` on first use, naming the word.
    """

    name = "pocketsphinx"
    model = "en-us"

    def __init__(
        self,
        *,
        grammar: Sequence[str] | None = None,
        keyphrases: Sequence[str] | None = None,
        keyphrase_threshold: float = 1e-20,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if grammar is not None and keyphrases is not None:
            raise ConfigError("pocketsphinx takes a grammar or keyphrases, not both", field="grammar")
        self.mode: Mode = "grammar" if grammar is not None else "keyphrase" if keyphrases else "open"
        self.grammar = list(grammar or [])
        self.keyphrases = [" ".join(words_of(k)) for k in keyphrases or [] if words_of(k)]
        self.keyphrase_threshold = keyphrase_threshold
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self._jsgf = jsgf_from_sentences(self.grammar) if grammar is not None else None
        self._decoder: Decoder | None = None
        self._lock = threading.Lock()

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        if not is_english(language):
            raise InvalidInput(
                f"pocketsphinx recognises English only, not {language!r}; send language 'en' or "
                "none, or set PARLEY_STT to a multilingual provider",
                field="language",
                limit="en",
            )
        pcm = await decode_async(audio.data, max_seconds=self.max_seconds, max_bytes=self.max_bytes)
        stop = threading.Event()
        try:
            text = await asyncio.to_thread(self._recognize, pcm, stop)
        except asyncio.CancelledError:
            # The worker thread cannot be killed: a short clip finishes (under ~8 s of CPU), a
            # long one checks `stop` every half second of audio.
            stop.set()
            raise
        return Transcript(text=text, language="en", duration=len(pcm) / SAMPLE_WIDTH / STT_RATE)

    def _recognize(self, pcm: bytes, stop: threading.Event) -> str:
        with self._lock:
            decoder = self._load()
            try:
                decoder.start_utt()
                if len(pcm) <= _WHOLE_BYTES:
                    # One call with full_utt normalises features over the whole clip (batch
                    # CMN): 34% instead of 56% WER on the test speech.
                    decoder.process_raw(pcm, False, True)
                else:
                    # Longer clips go in blocks (live CMN) so a cancelled request stops early.
                    for start in range(0, len(pcm), _BLOCK):
                        if stop.is_set():
                            decoder.end_utt()
                            return ""
                        decoder.process_raw(pcm[start : start + _BLOCK], False, False)
                decoder.end_utt()
                hyp = decoder.hyp()
            except (RuntimeError, ValueError) as exc:
                raise ProviderError(f"pocketsphinx failed to recognise the audio: {exc}") from exc
        if hyp is None:
            return ""
        return " ".join(str(hyp.hypstr).split())

    def _load(self) -> Decoder:
        """The decoder, built on first use (0.2-0.6 s) in the calling worker thread."""
        if self._decoder is not None:
            return self._decoder
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise ProviderNotConfigured(INSTALL_HINT, field="PARLEY_STT") from exc
        options: dict[str, Any] = {"samprate": STT_RATE, "loglevel": "FATAL"}
        if self.mode != "open":
            options["lm"] = None  # skip loading the n-gram model the search will not use
        try:
            decoder = Decoder(**options)
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(f"pocketsphinx could not load its model: {exc}") from exc
        if self.mode == "grammar":
            self._check_words(decoder, self.grammar, "grammar")
            assert self._jsgf is not None
            try:
                decoder.add_jsgf_string(_SEARCH, self._jsgf)
            except (RuntimeError, ValueError) as exc:
                raise ConfigError(f"the pocketsphinx grammar is invalid: {exc}", field="grammar") from exc
            decoder.activate_search(_SEARCH)
        elif self.mode == "keyphrase":
            self._check_words(decoder, self.keyphrases, "keyphrases")
            self._add_keyphrases(decoder)
        self._decoder = decoder
        return decoder

    def _check_words(self, decoder: Decoder, sentences: Sequence[str], field: str) -> None:
        unknown = sorted({w for s in sentences for w in words_of(s) if decoder.lookup_word(w) is None})
        if unknown:
            raise ConfigError(
                f"pocketsphinx's dictionary lacks {', '.join(map(repr, unknown))}; spell numbers "
                "and names as common English words",
                field=field,
                details={"unknown_words": unknown},
            )

    def _add_keyphrases(self, decoder: Decoder) -> None:
        # Several keyphrases are only accepted as a file, one "phrase /threshold/" per line.
        lines = "".join(f"{k} /{self.keyphrase_threshold:g}/\n" for k in self.keyphrases)
        fd, path = tempfile.mkstemp(suffix=".kws", prefix="parley-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(lines)
            decoder.add_kws(_SEARCH, path)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"pocketsphinx rejected the keyphrases: {exc}", field="keyphrases") from exc
        finally:
            os.unlink(path)
        decoder.activate_search(_SEARCH)

    async def aclose(self) -> None:
        # A recognition still running keeps its own reference; the model is freed after it.
        self._decoder = None
