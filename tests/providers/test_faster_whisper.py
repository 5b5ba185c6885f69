"""FasterWhisperSTT as far as it runs without a Whisper model: check(), the download, the load error.

No CTranslate2 Whisper model can be downloaded or built here (conversion needs torch and
transformers), so the local hub serves files that are not a model: the provider must fetch all
four through the Downloader and then fail with an error that says what to do, not a traceback.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest

from parley.errors import NotFound, ProviderUnavailable
from parley.models.catalog import whisper
from parley.providers.faster_whisper import FasterWhisperSTT, check
from parley.providers.stt import AudioInput
from tests.conftest import hub_locator, make_settings
from tests.models.test_download import static_hub


def _wav(seconds: float = 0.5) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(bytes(int(16000 * seconds) * 2))
    return out.getvalue()


def _bogus_model(size: str) -> dict[str, bytes]:
    spec = whisper(size)
    return {f"{spec.repo}/{file.path}": b"not a model" for file in spec.files}


def test_check_says_whether_the_model_will_come(tmp_path: Path) -> None:
    with static_hub({}, tmp_path / "hub") as (url, _):
        reachable = check(make_settings(tmp_path / "data", model_base_url=url, bundled_models=False))
    assert reachable.usable
    assert "model base not downloaded yet: fetched from" in reachable.reason
    assert "parley models pull faster-whisper-base" in reachable.reason
    offline = check(make_settings(tmp_path / "data", model_base_url=url, stt_model="tiny"))
    assert not offline.usable
    assert "model tiny not downloaded and 127.0.0.1 unreachable" in offline.reason
    unknown = check(make_settings(tmp_path / "data", stt_model="huge"))
    assert not unknown.usable and "unknown faster-whisper model 'huge'" in unknown.reason


def test_check_reports_a_downloaded_model(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", stt_model="small")
    spec = whisper("small")
    for file in spec.files:
        target = settings.data_dir / "models" / spec.repo / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
    availability = check(settings)
    assert availability.usable
    assert availability.reason == "model small, downloaded"


def test_an_unknown_size_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"known sizes: tiny, tiny.en, base"):
        FasterWhisperSTT(hub_locator(tmp_path), model="huge")


async def test_first_use_downloads_then_a_bad_model_is_a_clear_error(tmp_path: Path) -> None:
    with static_hub(_bogus_model("base"), tmp_path / "hub") as (url, asked):
        stt = FasterWhisperSTT(hub_locator(tmp_path / "models", url))
        with pytest.raises(ProviderUnavailable, match=r"cannot load faster-whisper model base from .*delete"):
            await stt.transcribe(AudioInput(_wav(), "audio/wav"))
    assert sorted(path.rsplit("/", 1)[1] for path in asked) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]
    assert (tmp_path / "models/Systran/faster-whisper-base/model.bin").read_bytes() == b"not a model"


async def test_no_network_and_no_model_says_where_to_put_it(tmp_path: Path) -> None:
    with static_hub({}, tmp_path / "hub") as (url, _):
        pass
    stt = FasterWhisperSTT(hub_locator(tmp_path / "models", url), model="tiny")
    with pytest.raises(
        ProviderUnavailable, match=r"cannot reach 127.0.0.1: no network\?.*faster-whisper-tiny"
    ):
        await stt.transcribe(AudioInput(_wav(), "audio/wav"))
