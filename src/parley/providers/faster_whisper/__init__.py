"""faster-whisper: Whisper on the CPU, the default local speech-to-text (extra `local`)."""

from __future__ import annotations

from parley.config import Settings
from parley.errors import NotFound
from parley.models.catalog import DEFAULT_WHISPER, whisper
from parley.providers.availability import Availability, missing_package, model_availability
from parley.providers.faster_whisper.stt import FasterWhisperSTT

__all__ = ["DEFAULT_WHISPER", "FasterWhisperSTT", "check"]


def check(settings: Settings) -> Availability:
    """Package, model name, then model files: pulled, bundled, or downloadable (a 2 s probe of the hub)."""
    missing = missing_package("faster_whisper", "local")
    if missing is not None:
        return missing
    size = settings.stt_model or DEFAULT_WHISPER
    try:
        spec = whisper(size)
    except NotFound as exc:
        return Availability.no(exc.message)
    return model_availability(
        settings, spec.name, f"model {size}", fix="set PARLEY_MODEL_BASE_URL to a mirror of the model hub"
    )
