"""No error a client gets names a path on the server (a model's folder, a cache file); the log
line keeps it. Checked where such paths come from: a speech model that cannot load."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import httpx
import pytest

from parley.errors import ProviderNotConfigured
from parley.providers.testing import EchoChat
from parley.redact import SERVER_PATH, without_paths
from tests.conftest import ServerFactory, make_settings, require_package


def wav(seconds: float = 0.5) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(int(16000 * seconds) * 2))
    return out.getvalue()


def test_every_error_body_leaves_server_paths_out_and_routes_in() -> None:
    body = ProviderNotConfigured(
        "cannot load /home/parley/.cache/models/whisper-base/model.bin; use /api/transcribe later",
        field="PARLEY_STT_MODEL",
    ).to_dict()
    assert body["error"] == f"cannot load {SERVER_PATH}; use /api/transcribe later"
    assert (
        without_paths("see ~/.cache/huggingface/hub and /tmp/x/y") == f"see {SERVER_PATH} and {SERVER_PATH}"
    )


async def test_a_speech_model_that_cannot_load_is_a_503_without_its_path(
    serve: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_package("faster_whisper", "the local speech-to-text")
    missing = tmp_path / "models" / "no-such-whisper"
    settings = make_settings(tmp_path / "data", stt="faster-whisper", stt_model=str(missing))
    server = serve(chat=EchoChat(), settings=settings)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        answer = await http.post(
            "/api/transcribe", files={"audio": ("a.wav", wav(), "audio/wav")}, data={"sessionId": "paths"}
        )
    assert answer.status_code in (502, 503), answer.text
    assert str(tmp_path) not in answer.text and "/tmp/" not in answer.text
    assert answer.json()["code"] in ("not_configured", "provider_error", "unavailable")
