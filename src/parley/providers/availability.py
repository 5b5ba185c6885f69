"""Whether a provider can run here, and why not: what `parley doctor` prints and selection uses.

Every vendor module exposes `check(settings) -> Availability` that answers without importing
heavy packages or loading models (find_spec, file and credential checks, a quick HTTP probe).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


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
