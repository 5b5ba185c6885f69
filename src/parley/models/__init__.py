"""Model files fetched on first use (or ahead with `parley models pull NAME`) into PARLEY_DATA_DIR."""

from __future__ import annotations

from pathlib import Path

from parley.config import Settings
from parley.models.catalog import ModelFile, ModelSpec, known, lookup
from parley.models.download import Downloader, ProgressCallback, models_dir, probe
from parley.providers.availability import Availability

__all__ = [
    "Downloader",
    "ModelFile",
    "ModelSpec",
    "ProgressCallback",
    "availability",
    "is_present",
    "known",
    "local_path",
    "lookup",
    "models_dir",
    "probe",
    "pull",
]


def pull(
    name: str, settings: Settings, *, progress: bool = True, on_progress: ProgressCallback | None = None
) -> Path:
    """Fetch model `name` now (blocking; a no-op when present) and return what its loader opens.

    Raises `NotFound` for an unknown name and a `ProviderError` subclass when the download fails.
    """
    spec = lookup(name)
    return Downloader.from_settings(settings, progress=progress, on_progress=on_progress).fetch_model(spec)


def local_path(name: str, settings: Settings) -> Path:
    """Where model `name` lives (or will live) under PARLEY_DATA_DIR/models."""
    return Downloader.from_settings(settings, progress=False).local_path(lookup(name))


def is_present(name: str, settings: Settings) -> bool:
    """Every file of `name` is on disk (a cheap check, no hashing)."""
    return Downloader.from_settings(settings, progress=False).is_present(lookup(name))


def availability(
    settings: Settings, spec: ModelSpec, label: str, *, fix: str, probe_timeout: float = 2.0
) -> Availability:
    """What `check()` says of a downloadable model: on disk, fetched on first use, or why not.

    `label` names it for people ("model base", "voice en_US-lessac-medium"); `fix` is the
    alternative to offer when the hub cannot be reached.
    """
    path = Downloader.from_settings(settings, progress=False).local_path(spec)
    if Downloader.from_settings(settings, progress=False).is_present(spec):
        return Availability.ok(f"{label} at {path}")
    unreachable = probe(settings.model_base_url, timeout=probe_timeout)
    if unreachable is None:
        return Availability.ok(
            f"{label} not downloaded yet: fetched from {settings.model_base_url} on first use "
            f"(or now: parley models pull {spec.name})"
        )
    return Availability.no(
        f"{label} not downloaded and {unreachable}: run `parley models pull {spec.name}` where there "
        f"is network, or {fix}"
    )
