"""Bad input from a device: a clear alert in the one error shape, the connection kept or closed as it
must be, and every other device unaffected."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from parley.config import Settings
from parley.providers.factory import build_vad
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.standins.server import BackgroundServer
from tests.conftest import ServerFactory, make_settings
from tests.xiaozhi.device import Device, opus_packets, ota


@pytest.fixture
def server(serve: ServerFactory, tmp_path: Any) -> BackgroundServer:
    settings: Settings = make_settings(tmp_path / "data", vad="silero")
    return serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(),
        tts=FixedLatencyTTS(first_byte=0.01, secs_per_char=0.005),
        vad=build_vad(settings),
        settings=settings,
    )


async def device(server: BackgroundServer, mac: str, version: int = 1) -> Device:
    body = (await ota(server.url, mac, "c-" + mac.replace(":", ""))).json()
    return await Device.connect(body["websocket"]["url"], body["websocket"]["token"], mac, version=version)


async def alert(dev: Device) -> dict[str, Any]:
    message = await dev.until_json("alert")
    assert message["status"] == "error" and message["message"] == message["error"]["error"]
    error: dict[str, Any] = message["error"]
    return error


async def still_answers(dev: Device, text: str = "are you there") -> None:
    await dev.send({"type": "listen", "state": "detect", "text": text})
    assert (await dev.until_json("stt"))["text"] == text
    await dev.until_json("tts", "stop")


async def close_code(dev: Device) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(20):
            while True:
                await dev.next()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_bad_frames_get_an_alert_naming_the_field_and_the_device_stays(
    server: BackgroundServer,
) -> None:
    dev = await device(server, "aa:bb:cc:00:01:01", version=2)
    cases: list[tuple[str | bytes, str]] = [
        ("{not json", "frame"),
        ('["a list"]', "type"),
        ('{"type":"dance"}', "type"),
        ('{"type":"listen","state":"sideways"}', "state"),
        (struct.pack(">HHIII", 2, 0, 0, 0, 99) + b"\x00" * 5, "payload_size"),
        (struct.pack(">HHIII", 2, 7, 0, 0, 2) + b"\x00\x00", "type"),
        (b"\x01\x02", "frame"),
        (struct.pack(">HHIII", 2, 0, 0, 0, 7) + b"garbage", "opus"),
    ]
    for frame, field in cases:
        await dev.ws.send(frame)
        error = await alert(dev)
        assert error["field"] == field and error["status"] == 400, error
        await still_answers(dev)  # between bad frames, so each gets its own alert
    unknown = '{"type":"dance"}'
    await dev.ws.send(unknown)
    assert "listen" in (await alert(dev))["limit"]
    await dev.close()


async def test_an_oversized_frame_closes_only_that_device(server: BackgroundServer) -> None:
    bystander = await device(server, "aa:bb:cc:00:01:02")
    offender = await device(server, "aa:bb:cc:00:01:03")
    await offender.ws.send(b"\x00" * (17 * 1024))
    error = await alert(offender)
    assert error["code"] == "payload_too_large" and error["limit"] == 16 * 1024
    assert await close_code(offender) == 1009
    await still_answers(bystander)
    await bystander.close()


async def test_a_flood_of_bad_frames_closes_the_connection_after_one_alert(server: BackgroundServer) -> None:
    dev = await device(server, "aa:bb:cc:00:01:04")
    for _ in range(50):
        await dev.ws.send(b"not opus at all")
    assert await close_code(dev) == 1008
    alerts = [m for m in dev.log if isinstance(m, dict) and m.get("type") == "alert"]
    assert len(alerts) == 2  # the first bad frame, and the one that ended it
    assert alerts[0]["error"]["field"] == "opus"


async def test_the_first_message_must_be_hello(server: BackgroundServer) -> None:
    mac = "aa:bb:cc:00:01:05"
    body = (await ota(server.url, mac, "c-aabbcc000105")).json()
    headers = {"Authorization": f"Bearer {body['websocket']['token']}", "Device-Id": mac}
    async with websockets.connect(body["websocket"]["url"], additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "listen", "state": "start", "mode": "auto"}))
        message = json.loads(await ws.recv())
        assert message["type"] == "alert" and message["error"]["field"] == "type"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_handshakes_refused_before_the_upgrade(server: BackgroundServer) -> None:
    mac = "aa:bb:cc:00:01:06"
    body = (await ota(server.url, mac, "c-aabbcc000106")).json()
    url, token = body["websocket"]["url"], body["websocket"]["token"]
    cases = [
        ({"Authorization": f"Bearer {token}", "Protocol-Version": "4"}, 400, "Protocol-Version"),
        ({"Protocol-Version": "1"}, 401, "Authorization"),
        ({"Authorization": "Bearer xz_forged"}, 401, "Authorization"),
        ({"Authorization": f"Bearer {token}", "Device-Id": "aa:bb:cc:00:01:07"}, 401, "Device-Id"),
    ]
    for headers, status, field in cases:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=headers)
        answer = refused.value.response
        assert answer.status_code == status
        assert json.loads(answer.body or b"{}")["field"] == field
    # the token also works as the query parameter the reference server accepts
    async with websockets.connect(f"{url}?authorization=Bearer%20{token}&device-id={mac}") as ws:
        await ws.send(json.dumps({"type": "hello", "version": 1, "audio_params": {"format": "opus"}}))
        assert json.loads(await ws.recv())["type"] == "hello"


async def test_audio_far_faster_than_real_time_is_refused_then_closed(server: BackgroundServer) -> None:
    dev = await device(server, "aa:bb:cc:00:01:08")
    silence = opus_packets(bytes(32000))  # 1 s as 60 ms packets
    for _ in range(25):  # 25 s of audio at once: past the 15 s burst
        for packet in silence:
            await dev.ws.send(packet)
    assert await close_code(dev) == 1008
    alerts = [m for m in dev.log if isinstance(m, dict) and m.get("type") == "alert"]
    assert alerts and alerts[0]["error"]["field"] == "audio" and alerts[0]["error"]["limit"] == 2
