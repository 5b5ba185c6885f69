"""Where a model's files come from: a hub download already here, a bundled pack, or the hub.

A model the user pulled (`parley models pull NAME`, or fetched on an earlier first use) wins over
the bundled copy of the same name; a bundled model is used before anything is downloaded, so the
first reply never waits on a download nobody asked for. The defaults follow the same rule: the
better catalogue model once it has been pulled, else the bundled one, else the catalogue model
(downloaded on first use, on a machine that has a hub).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from parley.config import Settings
from parley.errors import NotFound
from parley.models.bundled import BUNDLED, JOE, SMOLLM2, BundledModels
from parley.models.catalog import DEFAULT_GGUF, DEFAULT_PIPER_VOICE, ModelSpec, lookup
from parley.models.download import Downloader, ProgressCallback, models_dir

Source = Literal["downloaded", "bundled"]


class ModelLocator:
    def __init__(self, downloader: Downloader, bundled: BundledModels) -> None:
        self.downloader = downloader
        self.bundled = bundled

    @classmethod
    def from_settings(
        cls, settings: Settings, *, progress: bool = True, on_progress: ProgressCallback | None = None
    ) -> ModelLocator:
        downloader = Downloader.from_settings(settings, progress=progress, on_progress=on_progress)
        bundled = BundledModels(models_dir(settings) / "bundled", BUNDLED if settings.bundled_models else {})
        return cls(downloader, bundled)

    @staticmethod
    def spec(name: str) -> ModelSpec | None:
        """The catalogue entry (downloadable) of `name`, or None for a bundled-only model."""
        try:
            return lookup(name)
        except NotFound:
            if name in BUNDLED:
                return None
            raise

    def source(self, name: str) -> Source | None:
        """Where `name` would be loaded from without any download (cheap: no hashing)."""
        spec = self.spec(name)
        if spec is not None and self.downloader.is_present(spec):
            return "downloaded"
        if self.bundled.installed(name) is not None:
            return "bundled"
        return None

    def fetch(self, name: str) -> Path:
        """What the loader opens; blocking: may verify or reassemble a bundled model, or download.

        Raises `NotFound` for an unknown name and a `ProviderError` when nothing can provide it.
        """
        spec = self.spec(name)
        source = self.source(name)
        if source == "downloaded" and spec is not None:
            return self.downloader.fetch_model(spec)  # present: verified, no request
        if source == "bundled" or spec is None:
            return self.bundled.path(self.bundled.models.get(name) or BUNDLED[name])
        return self.downloader.fetch_model(spec)

    def default_chat_model(self) -> str:
        return _prefer(self, DEFAULT_GGUF, SMOLLM2.name)

    def default_voice(self) -> str:
        return _prefer(self, DEFAULT_PIPER_VOICE, JOE.name)


def _prefer(locator: ModelLocator, catalogue: str, bundled: str) -> str:
    if locator.source(catalogue) == "downloaded":
        return catalogue
    if locator.source(bundled) == "bundled":
        return bundled
    return catalogue
