"""Offline speech-to-text with pocketsphinx (US English; the model ships in the wheel).

`check()` answers without importing pocketsphinx, so `parley doctor` stays fast.
"""

from __future__ import annotations

from parley.config import Settings
from parley.providers.availability import Availability, missing_package
from parley.providers.pocketsphinx.stt import PocketSphinxSTT, is_english, jsgf_from_sentences

__all__ = ["PocketSphinxSTT", "check", "jsgf_from_sentences"]


def check(settings: Settings) -> Availability:
    """Usable when pocketsphinx and PyAV are installed and no other language is fixed."""
    for module in ("pocketsphinx", "av"):
        missing = missing_package(module, "local")
        if missing is not None:
            return missing
    if not is_english(settings.stt_language):
        return Availability.no(f"recognises English only, but PARLEY_STT_LANGUAGE={settings.stt_language}")
    return Availability.ok("US-English model ships with the package (rough on open vocabulary)")
