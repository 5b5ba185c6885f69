"""Piper: local neural text-to-speech, a voice per language (extra `piper`)."""

from __future__ import annotations

from parley.config import Settings
from parley.errors import NotFound
from parley.models import ModelLocator
from parley.models.bundled import BUNDLED
from parley.models.catalog import DEFAULT_PIPER_VOICE, piper_voice
from parley.providers.availability import Availability, missing_package, model_availability
from parley.providers.piper.tts import PiperTTS, choose_voice

__all__ = ["DEFAULT_PIPER_VOICE", "PiperTTS", "check", "choose_voice"]


def check(settings: Settings) -> Availability:
    """Package, voice name, then the voice files: pulled, bundled, or downloadable (a 2 s probe).

    Only the configured (or default) voice is checked; voices for other languages are fetched
    when a turn in that language first needs one.
    """
    missing = missing_package("piper", "piper")
    if missing is not None:
        return missing
    name = settings.tts_voice or ModelLocator.from_settings(settings, progress=False).default_voice()
    try:
        if name not in BUNDLED:
            piper_voice(name)
    except NotFound as exc:
        return Availability.no(exc.message)
    return model_availability(
        settings, name, f"voice {name}", fix="set PARLEY_MODEL_BASE_URL to a mirror of the model hub"
    )
