"""XiaoZhi devices over MQTT + UDP: the real Mosquitto on 127.0.0.1:1883, a real Parley on uvicorn,
devices that speak the firmware's MQTT + UDP protocol (tests/xiaozhi/mqtt_device.py).

Real Silero VAD on Piper speech; the chat, STT and TTS are the fixed test providers. Each test
has its own topic prefix, so runs in parallel never see each other's messages.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from parley.config import Settings
from parley.errors import ConfigError
from parley.providers.factory import build_vad
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.standins.server import BackgroundServer, free_port
from parley.web.xiaozhi import start_mqtt
from parley.xiaozhi.mqtt import MqttGateway
from parley.xiaozhi.udp import opus_duration_ms
from tests.conftest import ServerFactory, make_settings, require_service, require_tool
from tests.xiaozhi.conftest import Speech
from tests.xiaozhi.device import Decoder, history, opus_packets, ota
from tests.xiaozhi.mqtt_device import MqttDevice

HEARD = "turn on the lights"
SAYING = "Please turn on the kitchen lights."
MAC = "aa:bb:cc:00:01:01"
OTHER_MAC = "aa:bb:cc:00:01:02"
THIRD_MAC = "aa:bb:cc:00:01:03"


@pytest.fixture
def mqtt_settings(tmp_path: Any) -> Settings:
    require_service("127.0.0.1", 1883, "the Mosquitto broker carries the devices' JSON")
    return make_settings(
        tmp_path / "data",
        vad="silero",
        mqtt_url="mqtt://127.0.0.1:1883",
        mqtt_endpoint="127.0.0.1:1883",
        mqtt_topic_prefix="test-" + secrets.token_hex(6),
        udp_bind="127.0.0.1",
        udp_port=0,
        udp_host="127.0.0.1",
    )


@pytest.fixture
def stt() -> FixedLatencySTT:
    return FixedLatencySTT(delay=0.05, text=HEARD)


@pytest.fixture
def server(serve: ServerFactory, mqtt_settings: Settings, stt: FixedLatencySTT) -> BackgroundServer:
    return serve(
        chat=EchoChat(),
        stt=stt,
        tts=FixedLatencyTTS(first_byte=0.05, secs_per_char=0.01),
        vad=build_vad(mqtt_settings),
        settings=mqtt_settings,
    )


def gateway_of(server: BackgroundServer) -> MqttGateway:
    gateway: MqttGateway = server.app.state.xiaozhi_mqtt
    return gateway


Connect = Callable[..., Any]


@pytest.fixture
async def devices(server: BackgroundServer) -> AsyncIterator[Connect]:
    """`await connect(mac)`: OTA, then the device on the broker (closed after the test)."""
    opened: list[MqttDevice] = []

    async def connect(mac: str = MAC) -> MqttDevice:
        answer = await ota(server.url, mac, "c-" + mac.replace(":", ""))
        assert answer.status_code == 200, answer.text
        device = await MqttDevice.connect(answer.json()["mqtt"])
        opened.append(device)
        return device

    yield connect
    for device in opened:
        await device.close()


async def reply_of(device: MqttDevice) -> tuple[list[dict[str, Any]], list[bytes]]:
    await device.until_json("tts", "stop")
    messages = [m for m in device.log if isinstance(m, dict)]
    packets = [m for m in device.log if isinstance(m, bytes)]
    device.log.clear()
    return messages, packets


def check_packets(packets: list[bytes]) -> None:
    decoder = Decoder()
    lengths = {decoder.samples(p) for p in packets}
    assert packets and lengths == {2880}, f"every packet must be 60 ms (2880 samples at 48 kHz): {lengths}"


async def test_the_ota_answer_gives_each_device_its_own_topics(server: BackgroundServer) -> None:
    first = (await ota(server.url, MAC, "c-1")).json()
    other = (await ota(server.url, OTHER_MAC, "c-2")).json()
    block = first["mqtt"]
    prefix = server.app.state.services.settings.mqtt_topic_prefix
    assert block["endpoint"] == "127.0.0.1:1883"
    key = block["client_id"]
    assert len(key) == 64 and int(key, 16) >= 0
    assert block["publish_topic"] == f"{prefix}/up/{key}"
    assert block["subscribe_topic"] == f"{prefix}/down/{key}"
    assert other["mqtt"]["client_id"] != key
    # the token is never a topic (the broker logs client ids and topics)
    assert first["websocket"]["token"] not in json.dumps(block)
    # a new OTA answer (a reboot) moves the device to new topics, like its new token
    again = (await ota(server.url, MAC, "c-1")).json()
    assert again["mqtt"]["client_id"] != key


async def test_two_spoken_turns_over_mqtt_and_udp(
    server: BackgroundServer, devices: Connect, speech: Speech
) -> None:
    device = await devices()
    hello = await device.open_audio()
    assert hello["transport"] == "udp" and hello["session_id"]
    assert hello["audio_params"] == {
        "format": "opus",
        "sample_rate": 24000,
        "channels": 1,
        "frame_duration": 60,
    }
    udp = hello["udp"]
    assert udp["server"] == "127.0.0.1" and udp["port"] == gateway_of(server).udp.port
    assert len(udp["key"]) == 32 and len(udp["nonce"]) == 32 and udp["nonce"].startswith("01")
    await device.listen()
    for turn in range(2):
        device.speak(speech(SAYING))
        messages, packets = await reply_of(device)
        kinds = [(m["type"], m.get("state")) for m in messages]
        assert [m["text"] for m in messages if m["type"] == "stt"] == [HEARD]
        assert kinds.index(("stt", None)) < kinds.index(("tts", "start"))
        assert ("llm", None) in kinds
        sentences = [m["text"] for m in messages if m.get("state") == "sentence_start"]
        assert " ".join(sentences) == f"You said: {HEARD}"
        check_packets(packets)
        assert device.refused == 0, f"turn {turn}: the device refused downlink datagrams"
    assert device.sequences_in == sorted(set(device.sequences_in))
    contents = [(m["role"], m["content"]) for m in await history(server.url, "xiaozhi-aabbcc000101")]
    assert contents == [("user", HEARD), ("assistant", f"You said: {HEARD}")] * 2


async def test_audio_under_a_wrong_key_never_reaches_speech_to_text_and_others_go_on(
    server: BackgroundServer, devices: Connect, speech: Speech, stt: FixedLatencySTT
) -> None:
    intruder, other = await devices(MAC), await devices(OTHER_MAC)
    for device in (intruder, other):
        await device.open_audio()
        await device.listen()
    # noise under a wrong key, then the other device's turn and the same device's own
    intruder.speak(speech(SAYING, before=0.2, after=0.2), key=bytes(16))
    other.speak(speech(SAYING))
    messages, packets = await reply_of(other)
    assert [m["text"] for m in messages if m["type"] == "stt"] == [HEARD]
    check_packets(packets)
    intruder.speak(speech(SAYING))
    messages, _ = await reply_of(intruder)
    assert [m["text"] for m in messages if m["type"] == "stt"] == [HEARD]
    # one recording each: none was cut from the noise
    assert len(stt.calls) == 2
    assert gateway_of(server).udp.dropped["not_opus"] > 0


async def test_a_replayed_or_old_sequence_is_dropped(
    server: BackgroundServer, devices: Connect, speech: Speech, stt: FixedLatencySTT
) -> None:
    device = await devices()
    await device.open_audio()
    await device.listen()
    sent = device.speak(speech(SAYING))
    await reply_of(device)
    for data in sent:  # a replay of the whole utterance
        device.send_datagram(data)
    # an old sequence with fresh audio is as late as a replay
    device.send_datagram(device.datagram(b"\x58" + bytes(40), sequence=len(sent) // 2))
    device.speak(speech(SAYING))
    messages, _ = await reply_of(device)
    assert [m["text"] for m in messages if m["type"] == "stt"] == [HEARD]
    assert len(stt.calls) == 2
    assert gateway_of(server).udp.dropped["replayed"] == len(sent) + 1


async def test_bad_datagrams_are_dropped_without_a_word_and_the_session_goes_on(
    server: BackgroundServer, devices: Connect
) -> None:
    device = await devices()
    hello = await device.open_audio()
    silence = opus_packets(bytes(2 * 960))[0]
    device.send_datagram(device.datagram(silence))  # where Parley will send the reply's audio
    good = device.datagram(silence)
    device.send_datagram(good[:10])  # shorter than a header
    device.send_datagram(good + b"extra")  # longer than its header says
    device.send_datagram(b"\x02" + good[1:])  # not audio
    unknown = bytearray(good)
    unknown[4:8] = (int.from_bytes(good[4:8], "big") ^ 1).to_bytes(4, "big")
    device.send_datagram(bytes(unknown))  # no such session
    await device.send({"type": "listen", "state": "detect", "text": "still here"})
    messages, packets = await reply_of(device)
    assert [m["text"] for m in messages if m["type"] == "stt"] == ["still here"]
    assert not [m for m in messages if m["type"] == "alert"]
    check_packets(packets)
    dropped = gateway_of(server).udp.dropped
    assert (dropped["short"], dropped["length"], dropped["type"], dropped["unknown_ssrc"]) == (1, 1, 1, 1)
    assert hello["session_id"] == messages[0]["session_id"]


async def test_malformed_json_gets_an_alert_on_the_device_topic(
    server: BackgroundServer, devices: Connect
) -> None:
    device = await devices()
    await device.publish("{not json")  # before any session
    alert = await device.until_json("alert")
    assert alert["error"]["field"] == "frame" and "JSON" in alert["message"]
    await device.send({"type": "listen", "state": "start"})
    assert "hello first" in (await device.until_json("alert"))["message"]
    hello = await device.open_audio()
    await device.publish(b"\xff\xfe not json")  # in a session: alerted, and the session goes on
    alert = await device.until_json("alert")
    assert alert["session_id"] == hello["session_id"] and alert["error"]["field"] == "frame"
    await device.send({"type": "listen", "state": "detect", "text": "still here"})
    messages, _ = await reply_of(device)
    assert [m["text"] for m in messages if m["type"] == "stt"] == ["still here"]


async def test_a_key_that_is_no_device_is_refused(server: BackgroundServer) -> None:
    prefix = server.app.state.services.settings.mqtt_topic_prefix
    key = secrets.token_hex(32)
    block = {
        "endpoint": "127.0.0.1:1883",
        "client_id": key,
        "username": "",
        "password": "",
        "publish_topic": f"{prefix}/up/{key}",
        "subscribe_topic": f"{prefix}/down/{key}",
    }
    device = await MqttDevice.connect(block)
    try:
        await device.send({"type": "hello", "transport": "udp", "audio_params": {"format": "opus"}})
        alert = await device.until_json("alert")
        assert alert["error"]["code"] == "unauthenticated"
        assert not gateway_of(server).channels
    finally:
        await device.close()


async def test_goodbye_ends_the_session_both_ways(server: BackgroundServer, devices: Connect) -> None:
    device = await devices()
    hello = await device.open_audio()
    await device.send({"session_id": hello["session_id"], "type": "goodbye"})
    await device.send({"type": "listen", "state": "start"})
    assert "hello first" in (await device.until_json("alert"))["message"]
    # Parley ends a session itself (the device removed by its user): it says goodbye
    hello = await device.open_audio()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        removed = await http.delete(f"/api/devices/{MAC}")
        assert removed.status_code == 200, removed.text
    goodbye = await device.until_json("goodbye")
    assert goodbye["session_id"] == hello["session_id"]


class Broker:
    """A Mosquitto of the test's own on a free port, to stop and start again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = free_port()
        self.config = path / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self.process: subprocess.Popen[bytes] | None = None

    def lock(self, acl: str, accounts: dict[str, str]) -> None:
        """Accounts with passwords only, and `acl` as the ACL file."""
        passwords, acl_file = self.path / "passwords", self.path / "acl"
        passwords.touch()
        for user, password in accounts.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
        acl_file.write_text(acl)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {passwords}\nacl_file {acl_file}\n"
            # as root it would become `mosquitto`, who cannot read the test's private directory
            f"user {getpass.getuser()}\n"
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    require_tool("mosquitto", "a broker of the test's own, stopped and started again")
    broker = Broker(tmp_path)
    yield broker
    broker.stop()


async def answered_hello(block: dict[str, Any], deadline: float) -> MqttDevice:
    """Say hello until Parley (reconnecting to the broker at its own pace) answers: a poll, with a
    deadline, of two other processes."""
    while True:
        device: MqttDevice | None = None
        try:
            device = await MqttDevice.connect(block)
            await device.open_audio(timeout=1.0)
            return device
        except (TimeoutError, OSError, aiomqtt.MqttError) as exc:  # the broker is not up, or Parley not back
            if device is not None:
                await device.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"Parley did not answer a hello through the broker: {exc!r}") from exc
            await asyncio.sleep(0.2)


async def test_parley_connects_again_when_the_broker_comes_back(
    serve: ServerFactory, tmp_path: Path, own_broker: Broker
) -> None:
    settings = make_settings(
        tmp_path / "data",
        vad="silero",
        mqtt_url=f"mqtt://127.0.0.1:{own_broker.port}",
        mqtt_topic_prefix="test-" + secrets.token_hex(6),
        udp_bind="127.0.0.1",
        udp_port=0,
        udp_host="127.0.0.1",
    )
    # the broker is down when Parley starts: it starts anyway, and keeps trying
    server = serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(),
        tts=FixedLatencyTTS(),
        vad=build_vad(settings),
        settings=settings,
    )
    block = (await ota(server.url, MAC, "c-1")).json()["mqtt"]
    assert block["endpoint"] == f"127.0.0.1:{own_broker.port}"  # the request's host, the broker's port
    own_broker.start()
    device = await answered_hello(block, time.monotonic() + 30)
    await device.send({"type": "listen", "state": "detect", "text": "first"})
    assert (await device.until_json("stt"))["text"] == "first"
    await device.close()
    own_broker.stop()
    own_broker.start()
    device = await answered_hello(block, time.monotonic() + 30)
    await device.send({"type": "listen", "state": "detect", "text": "second"})
    assert (await device.until_json("stt"))["text"] == "second"
    await device.close()
    # the session the broker's loss ended is gone: one session, the newest
    assert len(gateway_of(server).channels) == 1


def test_the_opus_length_check_knows_real_packets_and_refuses_most_noise() -> None:
    rng = np.random.default_rng(5)
    speech = rng.normal(0, 3000, 16000).astype("<i2").tobytes()
    assert {opus_duration_ms(p) for p in opus_packets(speech)} == {60.0}
    assert opus_duration_ms(bytes([11 << 3])) == 60.0  # SILK wideband, one 60 ms frame
    assert opus_duration_ms(bytes([(31 << 3) | 3, 3])) == 60.0  # CELT, three 20 ms frames
    assert opus_duration_ms(bytes([(31 << 3) | 1, 0])) is None  # two equal frames, odd payload
    assert opus_duration_ms(b"") is None
    noise = [rng.bytes(80) for _ in range(4000)]
    passed = sum(opus_duration_ms(n) == 60.0 for n in noise)
    assert passed < len(noise) * 0.05, f"{passed} of {len(noise)} noise packets pass as 60 ms Opus"


async def test_a_flood_of_bad_messages_ends_the_session_with_goodbye(
    server: BackgroundServer, devices: Connect
) -> None:
    device = await devices()
    hello = await device.open_audio()
    for _ in range(50):  # connection.MAX_BAD_FRAMES in a row
        await device.publish("{not json")
    alerts = [await device.until_json("alert"), await device.until_json("alert")]
    assert [a["session_id"] for a in alerts] == [hello["session_id"]] * 2  # the first and the last
    goodbye = await device.until_json("goodbye")
    assert goodbye["session_id"] == hello["session_id"]
    # the device may open a new session at once
    again = await device.open_audio()
    assert again["session_id"] != hello["session_id"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"mqtt_url": "http://127.0.0.1:1883"}, "PARLEY_MQTT_URL"),
        ({"mqtt_url": "mqtt://127.0.0.1:1883"}, "PARLEY_UDP_HOST"),  # nowhere to tell devices to send audio
    ],
)
async def test_settings_that_cannot_work_are_refused_at_start(
    tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    settings = make_settings(tmp_path / "data", **overrides)
    with pytest.raises(ConfigError) as refused:
        await start_mqtt(Starlette(), settings)
    assert refused.value.field == field


def readme_acl() -> str:
    """The Mosquitto ACL file the README tells operators to use."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return readme.split("its ACL file:\n\n```\n", 1)[1].split("```", 1)[0]


async def test_the_readme_acl_keeps_each_device_to_its_own_topics(
    serve: ServerFactory, tmp_path: Path, own_broker: Broker
) -> None:
    require_tool("mosquitto_passwd", "the accounts of the locked broker")
    own_broker.lock(readme_acl(), {"parley": "parley-secret", "device": "device-secret"})
    own_broker.start()
    settings = make_settings(
        tmp_path / "data",
        vad="silero",
        mqtt_url=f"mqtt://parley:parley-secret@127.0.0.1:{own_broker.port}",
        mqtt_device_username="device",
        mqtt_device_password="device-secret",
        udp_bind="127.0.0.1",
        udp_port=0,
        udp_host="127.0.0.1",
    )
    server = serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(),
        tts=FixedLatencyTTS(),
        vad=build_vad(settings),
        settings=settings,
    )
    mine, other_block, snoop_block = [
        (await ota(server.url, mac, "c-" + mac[-2:])).json()["mqtt"] for mac in (MAC, OTHER_MAC, THIRD_MAC)
    ]
    assert (mine["username"], mine["password"]) == ("device", "device-secret")
    intruder = await answered_hello(mine, time.monotonic() + 30)
    other = await MqttDevice.connect(other_block)
    host, _, port = snoop_block["endpoint"].rpartition(":")
    async with aiomqtt.Client(
        host, int(port), identifier=snoop_block["client_id"], username="device", password="device-secret"
    ) as snoop:
        try:
            for topic in (
                "parley/#",
                "parley/down/+",
                other_block["subscribe_topic"],
                snoop_block["subscribe_topic"],
            ):
                await snoop.subscribe(topic)
            await other.open_audio()
            # a device speaking for another: the broker drops it (acknowledged, so handled before what follows)
            await intruder.client.publish(
                other_block["publish_topic"],
                json.dumps({"type": "listen", "state": "detect", "text": "forged"}),
                qos=1,
            )
            await other.send({"type": "listen", "state": "detect", "text": "mine"})
            assert (await other.until_json("stt"))["text"] == "mine"
            await intruder.send({"type": "listen", "state": "detect", "text": "my own"})
            assert (await intruder.until_json("stt"))["text"] == "my own"
            # the snoop hears only its own topic: Parley's answer to it comes after all of the above
            await snoop.publish(snoop_block["publish_topic"], "{not json")
            heard: list[str] = []
            async with asyncio.timeout(20):
                async for message in snoop.messages:
                    heard.append(str(message.topic))
                    if json.loads(message.payload).get("type") == "alert":
                        break
            assert set(heard) == {snoop_block["subscribe_topic"]}
        finally:
            await intruder.close()
            await other.close()
