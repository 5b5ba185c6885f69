"""POST /api/speak on a real server with the real espeak-ng voice: formats, headers and bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.app import create_app
from parley.audio.decode import decode
from parley.config import Settings
from parley.providers.espeak import EspeakTTS
from parley.providers.tts import TTSProvider
from parley.providers.unconfigured import UnconfiguredTTS
from parley.standins.server import BackgroundServer
from tests.conftest import make_settings, require_tool


def speak_server(settings: Settings, tts: TTSProvider) -> BackgroundServer:
    app = create_app(settings, tts=tts)
    return BackgroundServer(app).start()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_tool("espeak-ng", "the offline text-to-speech voice")
    settings = make_settings(tmp_path_factory.mktemp("speak") / "data", max_speak_chars=200)
    server = speak_server(settings, EspeakTTS())
    yield server.url
    server.stop()


@pytest.mark.parametrize(
    ("fmt", "content_type", "magic"),
    [("wav", "audio/wav", b"RIFF"), ("mp3", "audio/mpeg", b"ID3"), ("ogg", "audio/ogg", b"OggS")],
)
def test_each_format_comes_back_playable(url: str, fmt: str, content_type: str, magic: bytes) -> None:
    answer = httpx.post(f"{url}/api/speak", json={"text": "Hello from Parley.", "format": fmt})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(content_type)
    assert answer.headers["x-tts-provider"] == "espeak"
    assert answer.content.startswith(magic)
    seconds = len(decode(answer.content)) / 2 / 16000
    assert seconds == pytest.approx(float(answer.headers["x-audio-duration"]), abs=0.08)
    assert 0.8 < seconds < 3


def test_wav_is_the_default_and_language_changes_the_voice(url: str) -> None:
    english = httpx.post(f"{url}/api/speak", json={"text": "eins zwei drei"})
    german = httpx.post(f"{url}/api/speak", json={"text": "eins zwei drei", "language": "de"})
    assert english.headers["content-type"] == "audio/wav"
    assert english.content != german.content


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "text"),
        ({"text": "   "}, 400, "text"),
        ({"text": "x" * 201}, 400, "text"),
        ({"text": 5}, 400, "text"),
        ({"text": "hi", "format": "flac"}, 400, "format"),
        ({"text": "hi", "voice": ""}, 400, "voice"),
        ({"text": "hi", "voice": "xx-nothing"}, 400, "voice"),
        ({"text": "hi", "language": "not a language"}, 400, "language"),
        ({"text": "hi", "language": "tlh"}, 400, "language"),
    ],
)
def test_bad_input_has_the_one_error_shape(
    url: str, body: dict[str, object], status: int, field: str
) -> None:
    answer = httpx.post(f"{url}/api/speak", json=body)
    assert answer.status_code == status
    error = answer.json()
    assert set(error) >= {"error", "code", "status"} and error["status"] == status
    assert error["field"] == field


def test_too_long_text_names_the_limit(url: str) -> None:
    error = httpx.post(f"{url}/api/speak", json={"text": "x" * 201}).json()
    assert error["limit"] == 200 and "200 characters" in error["error"]


def test_not_json_is_a_415(url: str) -> None:
    answer = httpx.post(f"{url}/api/speak", content=b"text=hi", headers={"content-type": "text/plain"})
    assert answer.status_code == 415 and answer.json()["field"] == "Content-Type"


def test_without_a_voice_configured_it_says_how_to_get_one(tmp_path: Path) -> None:
    server = speak_server(make_settings(tmp_path / "data"), UnconfiguredTTS())
    try:
        answer = httpx.post(f"{server.url}/api/speak", json={"text": "hello"})
    finally:
        server.stop()
    assert answer.status_code == 503
    assert answer.json()["code"] == "not_configured"
    assert "espeak-ng" in answer.json()["error"]
