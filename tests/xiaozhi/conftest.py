"""XiaoZhi tests: a real Parley on uvicorn, devices on real WebSockets, speech spoken by Piper.

The speech a device sends is made by the bundled Piper voice (joe), resampled to the device's
16 kHz with faint noise added (no microphone is silent), once per test session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parley.audio.pcm import resample
from parley.providers.factory import build_tts
from tests.conftest import make_settings, require_package

RATE = 16000
NOISE = 0.003 * 32767

#: what the test devices say (spoken once per test session)
SAYINGS = ("Please turn on the kitchen lights.", "What is the weather like today?")

Speech = Callable[..., bytes]


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    """`speech(text, before=0.5, after=1.0)`: 16 kHz PCM of `text` between silences."""
    require_package("piper", "the bundled voice speaks the devices' test speech")
    tts = build_tts(make_settings(Path(tmp_path_factory.mktemp("voice")), tts="piper"))

    async def synthesize(text: str) -> np.ndarray:
        chunks = [chunk async for chunk in tts.synthesize(text)]
        pcm = resample(b"".join(c.pcm for c in chunks), chunks[0].sample_rate, RATE)
        return np.frombuffer(pcm, dtype="<i2").astype(np.float64)

    async def all_of_them() -> dict[str, np.ndarray]:
        try:
            return {text: await synthesize(text) for text in SAYINGS}
        finally:
            await tts.aclose()

    cache = asyncio.run(all_of_them())

    def make(text: str, before: float = 0.5, after: float = 1.0) -> bytes:
        audio = np.concatenate([np.zeros(int(before * RATE)), cache[text], np.zeros(int(after * RATE))])
        audio += np.random.default_rng(3).normal(0.0, NOISE, len(audio))
        return np.clip(audio, -32768, 32767).astype("<i2").tobytes()

    return make
