"""Offline text-to-speech with the espeak-ng program (a Debian package, not a wheel)."""

from __future__ import annotations

import shutil

from parley.config import Settings
from parley.providers.availability import Availability
from parley.providers.espeak.tts import DEFAULT_VOICE, INSTALL_HINT, EspeakTTS

__all__ = ["DEFAULT_VOICE", "EspeakTTS", "check"]


def check(settings: Settings) -> Availability:
    """Usable when the `espeak-ng` binary is on PATH; says where it was found."""
    path = shutil.which("espeak-ng")
    if path is None:
        return Availability.no(INSTALL_HINT)
    return Availability.ok(f"{path} (offline, robotic; about 100 languages)")
