"""Many devices on one server: 50 at once, each with two spoken turns, every one answered.

One real Parley on uvicorn with real Silero VAD and the fixed test providers; 50 simulated
devices (tests/xiaozhi/device.py) connected at the same time, each speaking Piper's speech as
60 ms Opus twice in auto mode (listened to again after each `tts stop`). The work is fixed (50 x 2
turns), not a minute of wall clock, and nothing here is timed: how late packets are under load
is bench/xiaozhi.py's to measure.

Also the cheaper paths that many devices rely on: Silero scoring a packet's frames in one run
(the same scores as one by one), and one idle timer per session instead of one per frame (a
quiet device is still closed, a talking one is not).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from parley.config import Settings
from parley.providers.factory import build_vad
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.standins.server import BackgroundServer
from tests.conftest import ServerFactory, make_settings, require_package
from tests.xiaozhi.conftest import Speech
from tests.xiaozhi.device import Decoder, Device, frame, history, opus_packets, ota

DEVICES = 50
TURNS = 2
HEARD = "turn on the lights"
REPLY = f"You said: {HEARD}"
#: a guard against a hang, not a measurement: 50 devices on a loaded 2-core machine take a while
PATIENCE = 120.0


@pytest.fixture
def vad_settings(tmp_path: Any) -> Settings:
    # One user (PARLEY_AUTH=none) with 50 devices: its call and turn rates must let 100 turns in.
    return make_settings(tmp_path / "data", vad="silero", rate_calls="1000/minute", rate_chat="1000/minute")


@pytest.fixture
def server(serve: ServerFactory, vad_settings: Settings) -> BackgroundServer:
    return serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(delay=0.05, text=HEARD),
        tts=FixedLatencyTTS(first_byte=0.05, secs_per_char=0.01),
        vad=build_vad(vad_settings),
        settings=vad_settings,
    )


def mac_of(index: int) -> str:
    return f"aa:bb:cc:05:{index >> 8 & 255:02x}:{index & 255:02x}"


async def reply(device: Device) -> list[dict[str, Any] | bytes]:
    """What the server sent up to `tts stop`."""
    await device.until_json("tts", "stop", timeout=PATIENCE)
    got, device.log = device.log, []
    return got


def check_turn(index: int, got: list[dict[str, Any] | bytes]) -> None:
    messages = [m for m in got if isinstance(m, dict)]
    kinds = [(m["type"], m.get("state")) for m in messages]
    where = f"device {index}: {kinds}"
    assert [m["text"] for m in messages if m["type"] == "stt"] == [HEARD], where
    assert kinds.count(("tts", "start")) == 1 and kinds[-1] == ("tts", "stop"), where
    start = got.index(next(m for m in messages if (m["type"], m.get("state")) == ("tts", "start")))
    audio = [i for i, m in enumerate(got) if isinstance(m, bytes)]
    assert audio and audio[0] > start, f"{where}: audio must follow tts start"
    sentences = [m["text"] for m in messages if m.get("state") == "sentence_start"]
    assert " ".join(sentences) == REPLY, where
    decoder = Decoder()  # at 48 kHz: 60 ms is 2880 samples
    lengths = {decoder.samples(m) for m in got if isinstance(m, bytes)}
    assert lengths == {2880}, f"device {index}: every downlink packet must be 60 ms, got {lengths}"


async def one_device(
    server: BackgroundServer, index: int, packets: list[bytes], ready: asyncio.Barrier
) -> str:
    mac = mac_of(index)
    answer = await ota(server.url, mac, "c-" + mac.replace(":", ""))
    assert answer.status_code == 200, answer.text
    ws = answer.json()["websocket"]
    device = await Device.connect(ws["url"], ws["token"], mac, version=3)
    try:
        await ready.wait()  # every device is connected before any speaks: all 50 at once
        await device.send({"type": "listen", "state": "start", "mode": "auto"})
        for _ in range(TURNS):
            for packet in packets:
                await device.ws.send(frame(3, packet))
            check_turn(index, await reply(device))
    finally:
        await device.close()
    return str(device.hello["session_id"])


async def test_fifty_devices_at_once_each_get_two_spoken_turns_answered(
    server: BackgroundServer, speech: Speech
) -> None:
    packets = opus_packets(speech("Please turn on the kitchen lights."))
    ready = asyncio.Barrier(DEVICES)
    sessions = await asyncio.gather(*(one_device(server, i, packets, ready) for i in range(DEVICES)))
    assert len(set(sessions)) == DEVICES
    # every turn is in its device's own conversation, each answered once
    for index in range(DEVICES):
        conversation = "xiaozhi-" + mac_of(index).replace(":", "")
        contents = [(m["role"], m["content"]) for m in await history(server.url, conversation)]
        assert contents == [("user", HEARD), ("assistant", REPLY)] * TURNS, (index, contents)


def test_silero_scores_a_packets_frames_in_one_run_as_it_scores_them_one_by_one(speech: Speech) -> None:
    """The cheaper path every device's VAD takes (several frames per onnxruntime run) gives the
    very scores, and carries the very state, of frame-by-frame scoring."""
    require_package("onnxruntime", "Silero VAD runs on onnxruntime")
    from parley.providers.silero.vad import SileroVAD, find_onnx

    if find_onnx() is None:
        require_package("faster_whisper", "its wheel ships the Silero ONNX model")
    pcm = speech("Please turn on the kitchen lights.")
    step = 1024  # one 512-sample frame
    whole = len(pcm) // step * step
    one_by_one = SileroVAD()
    expected = [one_by_one.probability(pcm[i : i + step]) for i in range(0, whole, step)]
    together = SileroVAD()
    sizes = np.random.default_rng(7).integers(1, 4, size=len(expected))  # 1-3 frames per call
    got: list[float] = []
    offset = 0
    for size in sizes:
        if offset >= whole:
            break
        got += together.score_frames(pcm[offset : min(whole, offset + int(size) * step)])
        offset += int(size) * step
    assert max(expected) > 0.9 and min(expected) < 0.1  # speech and silence both scored
    assert got == expected


class QueueChannel:
    """A device session's channel in this process: frames in through a queue, what is sent kept."""

    transport = "websocket"

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[str | bytes] = []
        self.closed: list[tuple[int, str]] = []

    async def receive(self) -> str | bytes | None:
        return await self.inbox.get()

    def hello_fields(self, hello: Any) -> dict[str, Any]:
        return {}

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


HELLO = '{"type":"hello","version":1,"audio_params":{"format":"opus"}}'


async def idle_session(tmp_path: Any, idle_seconds: float) -> tuple[Any, QueueChannel, Any]:
    from parley.bus.memory import LocalBus
    from parley.sessions.keys import session_key
    from parley.sessions.registry import SessionRegistry
    from parley.sessions.session import SessionConfig
    from parley.store.sqlite import SQLiteStore
    from parley.store.users import LOCAL_USER
    from parley.voice.pipeline import VoiceCall
    from parley.xiaozhi.connection import DeviceConnection, Limits

    store = SQLiteStore(tmp_path / "idle.db")
    await store.open()
    sessions = SessionRegistry(
        store=store,
        chat=EchoChat(),
        bus=LocalBus(),
        config=SessionConfig(system_prompt="sys", history_limit=20, max_tokens=128, max_queued_turns=4),
    )
    vad = build_vad(make_settings(tmp_path / "data", vad="silero"))
    key = session_key(LOCAL_USER.id, "xiaozhi-idle")
    channel = QueueChannel()
    connection = DeviceConnection(
        channel,
        lambda on_event: VoiceCall(
            key,
            sessions=sessions,
            model=vad.fresh(),
            stt=FixedLatencySTT(),
            tts=FixedLatencyTTS(),
            on_event=on_event,
        ),
        version=1,
        device_id="aa:bb:cc:05:ff:01",
        limits=Limits(idle_seconds=idle_seconds),
    )

    async def close() -> None:
        await sessions.aclose()
        await store.aclose()

    return connection, channel, close


async def test_a_quiet_device_is_closed_as_idle_by_the_sessions_one_timer(tmp_path: Any) -> None:
    connection, channel, close = await idle_session(tmp_path, idle_seconds=0.5)
    try:
        channel.inbox.put_nowait(HELLO)
        await connection.run()  # returns only when the idle timer closes the session
        assert connection.close_reason == "idle" and channel.closed == [(1000, "idle")]
    finally:
        await close()


async def test_a_device_that_keeps_sending_is_not_idle_however_long_it_talks(tmp_path: Any) -> None:
    """The timer is moved by input: 3 s of frames against a 1 s limit, then quiet, then closed."""
    connection, channel, close = await idle_session(tmp_path, idle_seconds=1.0)
    try:
        running = asyncio.create_task(connection.run())
        channel.inbox.put_nowait(HELLO)
        for _ in range(60):  # a frame every 50 ms: the device's input pattern, not a wait
            await asyncio.sleep(0.05)
            assert not running.done(), "a device sending input was closed as idle"
            channel.inbox.put_nowait('{"type":"listen","state":"start","mode":"auto"}')
        await running
        assert connection.close_reason == "idle"
    finally:
        await close()
