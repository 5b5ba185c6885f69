"""EspeakTTS running the real espeak-ng binary: streaming, voices, errors and a killed process."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

import pytest

from parley.errors import InvalidInput, ProviderNotConfigured
from parley.providers.espeak import EspeakTTS, check
from parley.providers.espeak.tts import parse_voices
from parley.providers.tts import AudioChunk
from tests.conftest import make_settings, require_tool


@pytest.fixture
def tts() -> EspeakTTS:
    require_tool("espeak-ng", "the offline text-to-speech voice")
    return EspeakTTS()


async def collect(tts: EspeakTTS, text: str, **options: str) -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize(text, **options)]


def espeak_children() -> list[int]:
    """espeak-ng processes whose parent is this test process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name == "espeak-ng" and int(rest[1]) == os.getpid():
            found.append(int(entry))
    return found


async def test_speech_streams_as_22k_pcm_with_the_first_chunk_early(tts: EspeakTTS) -> None:
    text = "Hello there. This is Parley speaking, offline. " * 8
    started = time.perf_counter()
    first_at = None
    chunks = []
    async for chunk in tts.synthesize(text):
        first_at = first_at or time.perf_counter() - started
        chunks.append(chunk)
    assert first_at is not None and first_at < 0.5
    assert len(chunks) > 5  # streamed in pieces, not as one blob at the end
    assert {c.sample_rate for c in chunks} == {22050}
    assert all(len(c.pcm) % 2 == 0 for c in chunks)
    assert 15 < sum(c.duration for c in chunks) < 60


async def test_language_picks_a_voice_and_voice_wins(tts: EspeakTTS) -> None:
    english = sum(c.duration for c in await collect(tts, "eins zwei drei vier", language="en"))
    german = sum(c.duration for c in await collect(tts, "eins zwei drei vier", language="de"))
    assert english > 0 and german > 0 and english != german
    assert await tts._pick_voice(None, "fr") == "fr-fr"
    assert await tts._pick_voice(None, "pt-BR") == "pt-br"
    assert await tts._pick_voice(None, "en") == "en-us"
    assert await tts._pick_voice("en-gb+f3", "de") == "en-gb+f3"
    assert await collect(tts, "hello", voice="en-us+f3")


async def test_unknown_voice_and_language_are_invalid_input(tts: EspeakTTS) -> None:
    with pytest.raises(InvalidInput) as caught:
        await collect(tts, "hello", voice="xx-nothing")
    assert caught.value.field == "voice"
    with pytest.raises(InvalidInput) as caught:
        await collect(tts, "hello", language="tlh")
    assert caught.value.field == "language"
    with pytest.raises(InvalidInput):
        await collect(tts, "hello", voice="--help")


async def test_text_that_looks_like_options_is_spoken(tts: EspeakTTS) -> None:
    chunks = await collect(tts, "--version -v de")
    assert sum(c.duration for c in chunks) > 0.5


async def test_empty_text_makes_no_sound_and_no_process(tts: EspeakTTS) -> None:
    assert await collect(tts, "   ") == []


async def test_stopping_early_kills_the_process(tts: EspeakTTS) -> None:
    stream = cast(AsyncGenerator[AudioChunk, None], tts.synthesize("A long story that goes on. " * 300))
    first = await anext(stream)
    assert first.pcm
    assert espeak_children(), "espeak-ng should still be running mid-story"
    await stream.aclose()
    assert espeak_children() == []


async def test_a_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    tts = EspeakTTS(binary=str(tmp_path / "no-espeak"))
    with pytest.raises(ProviderNotConfigured) as caught:
        await collect(tts, "hello")
    assert "apt-get install espeak-ng" in caught.value.message
    assert caught.value.field == "PARLEY_TTS"


def test_check_reports_the_binary(tmp_path: Path) -> None:
    require_tool("espeak-ng", "the offline text-to-speech voice")
    availability = check(make_settings(tmp_path))
    assert availability.usable and "espeak-ng" in availability.reason


def test_parse_voices_reads_the_language_column() -> None:
    listing = (
        "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
        " 5  de              --/M      German             gmw/de\n"
        " 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)\n"
    )
    assert parse_voices(listing) == frozenset({"de", "en-us"})
