"""faster-whisper: Whisper on the CPU, the default local speech-to-text (extra `whisper`)."""

from __future__ import annotations

from parley.config import Settings
from parley.errors import NotFound
from parley.models.catalog import DEFAULT_WHISPER, whisper
from parley.models.download import Downloader, probe
from parley.providers.availability import Availability, missing_package
from parley.providers.faster_whisper.stt import FasterWhisperSTT

__all__ = ["DEFAULT_WHISPER", "FasterWhisperSTT", "check"]


def check(settings: Settings) -> Availability:
    """Package, model name, then model files: present, or downloadable (a 2 s probe of the hub)."""
    missing = missing_package("faster_whisper", "whisper")
    if missing is not None:
        return missing
    size = settings.stt_model or DEFAULT_WHISPER
    try:
        spec = whisper(size)
    except NotFound as exc:
        return Availability.no(exc.message)
    downloader = Downloader.from_settings(settings, progress=False)
    folder = downloader.local_path(spec)
    if downloader.is_present(spec):
        return Availability.ok(f"model {size} at {folder}")
    unreachable = probe(settings.model_base_url)
    if unreachable is None:
        return Availability.ok(
            f"model {size} not downloaded yet: fetched from {settings.model_base_url} on first use "
            f"(or now: parley models pull {spec.name})"
        )
    return Availability.no(
        f"model {size} not downloaded and {unreachable}: run `parley models pull {spec.name}` where "
        f"there is network and copy {folder} here, or set PARLEY_MODEL_BASE_URL to a mirror"
    )
