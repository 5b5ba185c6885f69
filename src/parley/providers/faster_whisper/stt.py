"""Whisper on the CPU through faster-whisper (CTranslate2, int8), the default local speech-to-text.

The model folder comes from the `ModelLocator`: a pulled copy, else the bundled Whisper base,
else a download on the first transcription (PARLEY_MODEL_BASE_URL for mirrors), and is always
loaded with `local_files_only`, so faster-whisper's own hub client never runs. Loading, decoding and
recognition all block, so they run in a worker thread; one lock keeps two first requests from
loading the model twice, and CTranslate2 itself serialises concurrent transcriptions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from parley.audio.decode import decode
from parley.audio.encode import encode_wav
from parley.errors import ProviderError, ProviderUnavailable
from parley.models.catalog import DEFAULT_WHISPER, whisper
from parley.models.locate import ModelLocator
from parley.providers.faster_whisper.short_window import transcribe_short
from parley.providers.stt import AudioInput, STTProvider, Transcript

if TYPE_CHECKING:
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

INSTALL_HINT = "faster-whisper is not installed: pip install 'parley[whisper]'"


class FasterWhisperSTT(STTProvider):
    """Transcribes whole recordings; `language` fixes the language, None detects it per recording.

    `beam_size` 1 (greedy) is about twice as fast as faster-whisper's default 5 for a small loss
    on hard audio: in a voice turn the transcript is on the critical path. For the same reason a
    recording shorter than ~25 s is first decoded from one encoder pass over its own length
    (`short_window.py`, 5-10x faster), and only goes through faster-whisper's 30 s windows when
    that decode shows a sign of having gone wrong (`short_window=False` always uses them).
    """

    name = "faster-whisper"

    def __init__(
        self,
        locator: ModelLocator,
        *,
        model: str = DEFAULT_WHISPER,
        language: str | None = None,
        beam_size: int = 1,
        cpu_threads: int = 0,
        max_seconds: float = 300.0,
        short_window: bool = True,
    ) -> None:
        self.spec = whisper(model)  # raises NotFound for an unknown size, before any download
        self.model = model
        self.locator = locator
        self.language = language
        self.beam_size = beam_size
        self.cpu_threads = cpu_threads
        self.max_seconds = max_seconds
        self.short_window = short_window
        self._whisper: WhisperModel | None = None
        self._loading = asyncio.Lock()

    async def load(self) -> WhisperModel:
        """Download (first time) and load the model; called by the first `transcribe` otherwise."""
        async with self._loading:
            if self._whisper is None:
                self._whisper = await asyncio.to_thread(self._load)
            return self._whisper

    def _load(self) -> WhisperModel:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ProviderUnavailable(INSTALL_HINT, field="PARLEY_STT") from exc
        folder = self.locator.fetch(self.spec.name)
        log.info("loading faster-whisper %s from %s", self.model, folder)
        try:
            return WhisperModel(
                str(folder),
                device="cpu",
                compute_type="int8",
                cpu_threads=self.cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            # The folder and CTranslate2's own words (which quote it) go to the log only: this
            # message reaches browsers, which must never see the server's paths.
            log.error("cannot load faster-whisper %s from %s: %s", self.model, folder, exc)
            raise ProviderUnavailable(
                f"cannot load faster-whisper model {self.model} from its folder ({type(exc).__name__}; "
                "the server's log names the folder); the files may be damaged: delete that folder to "
                "download them again",
                field="PARLEY_STT_MODEL",
            ) from exc

    async def warm_up(self) -> None:
        # Loading is most of it; one short recognition also builds CTranslate2's buffers.
        model = await self.load()
        silence = encode_wav(bytes(16000), 16000)  # half a second
        await asyncio.to_thread(self._transcribe, model, silence, self.language or "en")

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        model = await self.load()
        return await asyncio.to_thread(self._transcribe, model, audio.data, language or self.language)

    def _transcribe(self, model: WhisperModel, data: bytes, language: str | None) -> Transcript:
        import numpy as np

        # The upload's size was limited where it entered (PARLEY_MAX_AUDIO_BYTES), not here.
        pcm = decode(data, max_seconds=self.max_seconds, max_bytes=max(len(data), 1))
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if self.short_window:
            try:
                short = transcribe_short(model, samples, language)
            except (RuntimeError, ValueError) as exc:
                log.warning("faster-whisper's short window failed (%s); using the 30 s window", exc)
                short = None
            if short is not None and short.text is not None:
                return Transcript(text=short.text, language=short.language, duration=short.duration)
            log.debug(
                "faster-whisper's short window is unsure of %.1f s; using the 30 s window", len(pcm) / 32000
            )
            if short is not None and language is None:
                language = short.language  # when sure: the 30 s window need not detect it again
        try:
            segments, info = model.transcribe(
                samples, language=language, beam_size=self.beam_size, condition_on_previous_text=False
            )
            # `segments` is lazy: recognition happens while it is consumed, so inside the try.
            text = " ".join(segment.text.strip() for segment in segments).strip()
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(f"faster-whisper failed on this recording: {exc}") from exc
        return Transcript(text=text, language=info.language or language, duration=info.duration)
