"""A device's session end to end on the real app: hello, speech as Opus, stt / llm / tts and audio back.

Real Silero VAD on espeak-ng speech, real sessions and SQLite; the chat, STT and TTS are the fixed
test providers (the protocol is under test here, not the models).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from parley.config import Settings
from parley.providers.factory import build_vad
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.standins.server import BackgroundServer
from tests.conftest import ServerFactory, make_settings
from tests.xiaozhi.conftest import Speech
from tests.xiaozhi.device import Decoder, Device, history, ota

HEARD = "turn on the lights"
MAC = "aa:bb:cc:00:00:01"
SESSION = "xiaozhi-aabbcc000001"


@pytest.fixture
def vad_settings(tmp_path: Any) -> Settings:
    return make_settings(tmp_path / "data", vad="silero")


@pytest.fixture
def server(serve: ServerFactory, vad_settings: Settings) -> BackgroundServer:
    return serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(delay=0.05, text=HEARD),
        tts=FixedLatencyTTS(first_byte=0.05, secs_per_char=0.01),
        vad=build_vad(vad_settings),
        settings=vad_settings,
    )


async def connect(server: BackgroundServer, mac: str = MAC, **kwargs: Any) -> Device:
    answer = await ota(server.url, mac, "c-" + mac.replace(":", ""))
    assert answer.status_code == 200, answer.text
    ws = answer.json()["websocket"]
    return await Device.connect(ws["url"], ws["token"], mac, **kwargs)


async def reply_of(device: Device) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Everything up to `tts stop`: the JSON messages and the audio packets."""
    await device.until_json("tts", "stop")
    messages = [m for m in device.log if isinstance(m, dict)]
    packets = [m for m in device.log if isinstance(m, bytes)]
    device.log.clear()
    return messages, packets


def check_packets(packets: list[bytes]) -> None:
    decoder = Decoder()
    lengths = {decoder.samples(p) for p in packets}
    assert packets and lengths == {2880}, f"every packet must be 60 ms (2880 samples at 48 kHz): {lengths}"


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_a_spoken_turn_in_each_protocol_version(
    server: BackgroundServer, speech: Speech, version: int
) -> None:
    device = await connect(server, version=version)
    assert device.hello["session_id"]
    assert device.hello["audio_params"] == {
        "format": "opus",
        "sample_rate": 24000,
        "channels": 1,
        "frame_duration": 60,
    }
    await device.send(
        {"session_id": device.hello["session_id"], "type": "listen", "state": "start", "mode": "auto"}
    )
    await device.speak(speech("Please turn on the kitchen lights."))
    messages, packets = await reply_of(device)
    kinds = [(m["type"], m.get("state")) for m in messages]
    assert ("stt", None) in kinds and messages[kinds.index(("stt", None))]["text"] == HEARD
    start = kinds.index(("tts", "start"))
    assert kinds.index(("stt", None)) < start
    assert ("llm", None) in kinds[: start + 1]
    sentences = [m["text"] for m in messages if m.get("state") == "sentence_start"]
    assert " ".join(sentences) == f"You said: {HEARD}"
    check_packets(packets)
    # the device's talk is a conversation of its user, like the web app's
    contents = [(m["role"], m["content"]) for m in await history(server.url, SESSION)]
    assert contents == [("user", HEARD), ("assistant", f"You said: {HEARD}")]
    await device.close()


async def test_realtime_mode_listens_again_after_each_reply_without_listen_stop(
    server: BackgroundServer, speech: Speech
) -> None:
    device = await connect(server, version=3)
    await device.send({"type": "listen", "state": "start", "mode": "realtime"})
    for _ in range(2):
        await device.speak(speech("Please turn on the kitchen lights."))
        messages, packets = await reply_of(device)
        assert [m["text"] for m in messages if m["type"] == "stt"] == [HEARD]
        check_packets(packets)
    await device.close()


async def test_manual_mode_ends_the_turn_on_listen_stop(server: BackgroundServer, speech: Speech) -> None:
    device = await connect(server)
    await device.send({"type": "listen", "state": "start", "mode": "manual"})
    # no trailing silence: only `listen stop` can end this utterance
    await device.speak(speech("Please turn on the kitchen lights.", after=0.0))
    await device.send({"type": "listen", "state": "stop"})
    messages, packets = await reply_of(device)
    assert [m["text"] for m in messages if m["type"] == "stt"] == [HEARD]
    check_packets(packets)
    await device.close()


async def test_detect_with_text_is_a_turn_of_that_text(server: BackgroundServer) -> None:
    device = await connect(server, version=2)
    await device.send({"type": "listen", "state": "detect", "text": "what time is it"})
    messages, packets = await reply_of(device)
    assert [m["text"] for m in messages if m["type"] == "stt"] == ["what time is it"]
    assert (
        " ".join(m["text"] for m in messages if m.get("state") == "sentence_start")
        == "You said: what time is it"
    )
    check_packets(packets)
    await device.close()


async def test_abort_stops_the_reply_at_once_and_history_keeps_what_was_heard(
    serve: ServerFactory, vad_settings: Settings
) -> None:
    tts = FixedLatencyTTS(first_byte=0.02, secs_per_char=0.2)  # a reply of many seconds
    server = serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(text=HEARD),
        tts=tts,
        vad=build_vad(vad_settings),
        settings=vad_settings,
    )
    device = await connect(server)
    long_text = "tell me a long story about a dragon who lived under the old stone bridge"
    await device.send({"type": "listen", "state": "detect", "text": long_text})
    await device.until_json("tts", "start")
    while not isinstance(await device.next(), bytes):
        pass
    await device.send({"type": "abort", "reason": "wake_word_detected"})
    await device.until_json("tts", "stop")
    packets = [m for m in device.log if isinstance(m, bytes)]
    full = tts.duration(f"You said: {long_text}") / 0.06
    assert len(packets) < full / 2, f"{len(packets)} of {full:.0f} packets went out after the abort"
    reply = (await history(server.url, SESSION))[-1]
    assert reply["status"] == "interrupted" and len(reply["content"]) < len(f"You said: {long_text}")
    await device.close()


async def test_the_web_app_sees_a_device_turn_live(server: BackgroundServer) -> None:
    """The device's conversation is an ordinary session: a browser socket on it sees the turn."""
    ws_url = server.url.replace("http", "ws") + f"/ws?sessionId={SESSION}"
    async with websockets.connect(ws_url) as browser:
        assert json.loads(await browser.recv())["type"] == "connected"
        device = await connect(server)
        await device.send({"type": "listen", "state": "detect", "text": "good morning"})
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while not seen or seen[-1]["type"] != "reply":
                seen.append(json.loads(await browser.recv()))
        said = next(event for event in seen if event["type"] == "user_message")
        assert said["message"]["content"] == "good morning" and said["sessionId"] == SESSION
        assert seen[-1]["message"]["content"] == "You said: good morning"
        await device.until_json("tts", "stop")
        await device.close()


async def test_a_turn_typed_in_the_browser_is_heard_on_the_device(server: BackgroundServer) -> None:
    device = await connect(server, version=3)
    await device.send({"type": "listen", "state": "start", "mode": "realtime"})
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        sent = await http.post("/api/chat", json={"sessionId": SESSION, "message": "hello from the browser"})
        assert sent.status_code == 200, sent.text
    messages, packets = await reply_of(device)
    sentences = [m["text"] for m in messages if m.get("state") == "sentence_start"]
    assert " ".join(sentences) == "You said: hello from the browser"
    assert ("tts", "start") in [(m["type"], m.get("state")) for m in messages]
    check_packets(packets)
    await device.close()
