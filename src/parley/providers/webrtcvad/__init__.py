"""webrtcvad: the light fallback VAD (the GMM detector from WebRTC, via webrtcvad-wheels)."""

from __future__ import annotations

from parley.config import Settings
from parley.providers.availability import Availability, missing_package
from parley.providers.webrtcvad.vad import WebRTCVAD

__all__ = ["WebRTCVAD", "check"]


def check(settings: Settings) -> Availability:
    """Usable whenever the wheel is installed: the detector has no model file."""
    return missing_package("webrtcvad", "local") or Availability.ok("WebRTC VAD (webrtcvad-wheels)")
