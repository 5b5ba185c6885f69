"""Voice calls over real WebRTC: an aiortc client peer and the server's peer on loopback.

The client sends espeak-ng speech on its microphone track, the server's pipeline (real Silero VAD,
real session and storage, fixed-latency STT/LLM/TTS) answers on its track and over the data channel.
Signalling goes through the real routes (`web/rtc.py`) on an in-process ASGI transport.
"""

from __future__ import annotations

import asyncio
import fractions
import gc
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import httpx
import numpy as np
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from fastapi import FastAPI

from parley import metrics
from parley.audio.pcm import resample
from parley.auth.base import NoAuth
from parley.bus.memory import LocalBus
from parley.errors import ConfigError
from parley.providers.factory import build_vad
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.rtc.directory import CallDirectory
from parley.rtc.ice import parse_ice_servers
from parley.rtc.jitter import ImmediateJitterBuffer
from parley.rtc.registry import CallConfig, CallRegistry
from parley.rtc.tracks import audio_jitter_buffer, shorten_jitter_buffer
from parley.sessions.keys import session_key
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.store.sqlite import SQLiteStore
from parley.store.users import LOCAL_USER
from parley.voice.pipeline import VoiceConfig
from parley.web import errors, rtc
from parley.web.auth import Authenticate
from parley.web.limits import ClientLimits
from tests.conftest import make_settings
from tests.voice.test_pipeline import speech

SID = "rtc-session"
RATE = 48000
FRAME = 960
NOISE = 0.003 * 32767
#: calls opened and closed in the leak test (the issue asks for no leak after 100)
LEAK_CALLS = int(os.environ.get("PARLEY_LEAK_CALLS", "20"))


class MicTrack(MediaStreamTrack):
    """A microphone: 48 kHz mono frames of faint noise in real time, speech mixed in on request."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._rng = np.random.default_rng(3)
        self._start: float | None = None
        self._sent = 0
        self.speech_ended_at: float | None = None
        #: set once half a second of room noise has gone out (the call is connected and flowing)
        self.flowing = asyncio.Event()

    def say(self, pcm16k: bytes) -> None:
        self._pending += resample(pcm16k, 16000, RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._sent * FRAME / RATE - time.monotonic()))
        voice = np.zeros(FRAME)
        if self._pending:
            part = np.frombuffer(bytes(self._pending[: FRAME * 2]), dtype="<i2")
            del self._pending[: FRAME * 2]
            voice[: len(part)] = part
            if not self._pending:
                self.speech_ended_at = time.monotonic()
        samples = np.clip(voice + self._rng.normal(0, NOISE, FRAME), -32768, 32767).astype("<i2")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._sent * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self._sent += 1
        if self._sent * FRAME >= RATE // 2:
            self.flowing.set()
        return frame


@dataclass
class Client:
    """The browser's side of a call."""

    pc: RTCPeerConnection
    mic: MicTrack
    channel: RTCDataChannel
    messages: list[dict[str, Any]] = field(default_factory=list)
    heard: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, rms) per frame
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    call_id: str = ""

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    async def until(self, kind: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while kind not in self.types():
            assert time.monotonic() < deadline, f"no {kind}; got {self.types()}"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.mic.stop()
        await self.pc.close()


async def dial(http: httpx.AsyncClient, session_id: str = SID, *, language: str | None = None) -> Client:
    pc = RTCPeerConnection()
    mic = MicTrack()
    pc.addTrack(mic)
    channel = pc.createDataChannel("events")
    client = Client(pc, mic, channel)
    channel.on("message", lambda m: client.messages.append(json.loads(m)))

    async def listen(track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            samples = frame.to_ndarray().astype(np.float64)
            client.heard.append((time.monotonic(), float(np.sqrt(np.mean(samples**2)))))

    pc.on("track", lambda track: client.readers.append(asyncio.create_task(listen(track))))
    await pc.setLocalDescription(await pc.createOffer())
    r = await http.post(
        "/api/offer",
        json={"sdp": pc.localDescription.sdp, "type": "offer", "sessionId": session_id}
        | ({"language": language} if language else {}),
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["type"] == "answer" and answer["callId"].startswith("call_")
    client.call_id = answer["callId"]
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    return client


@dataclass
class Server:
    http: httpx.AsyncClient
    calls: CallRegistry
    store: SQLiteStore
    stt: FixedLatencySTT


@asynccontextmanager
async def http_client(
    calls: CallRegistry,
    *,
    limits: ClientLimits | None = None,
    client: tuple[str, int] = ("127.0.0.1", 123),
) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    errors.install(app)
    app.include_router(rtc.router)
    app.add_middleware(Authenticate)
    # Until app.py builds Services with its `calls`, the routes only need these attributes.
    app.state.services = SimpleNamespace(
        calls=calls,
        call_directory=CallDirectory(calls),
        limits=limits,
        auth=NoAuth(),
        settings=SimpleNamespace(auth="none", metrics_token=None),
        user_limits=None,
    )
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = make_settings(tmp_path / "data", vad="silero")
    store = SQLiteStore(tmp_path / "rtc.db")
    await store.open()
    sessions = SessionRegistry(
        store=store,
        chat=EchoChat(first_token_delay=0.2, token_interval=1 / 30),
        bus=LocalBus(),
        config=SessionConfig(system_prompt="sys", history_limit=20, max_tokens=128, max_queued_turns=4),
    )
    stt = FixedLatencySTT(delay=0.1, text="Hello there. How are you today?")
    calls = CallRegistry(
        sessions=sessions,
        vad=build_vad(settings),
        stt=stt,
        tts=FixedLatencyTTS(first_byte=0.1),
        config=CallConfig(
            # None: with no route to a STUN server aiortc's gathering would wait for its timeout.
            idle_seconds=2.0,
            voice=VoiceConfig.from_settings(settings),
        ),
    )
    async with http_client(calls) as http:
        yield Server(http, calls, store, stt)
    await calls.aclose()
    await sessions.aclose()
    await store.aclose()


async def test_a_call_transcribes_speech_and_answers_with_audio_and_events(server: Server) -> None:
    client = await dial(server.http)
    try:
        await client.mic.flowing.wait()  # connected, and some room noise before speaking
        client.mic.say(speech("hello there how are you today"))
        await client.until("assistant_stopped_speaking")
        kinds = client.types()
        for kind in ("user_started_speaking", "user_stopped_speaking", "transcript", "user_message", "chunk"):
            assert kind in kinds
        assert {"assistant_started_speaking", "metrics", "reply"} <= set(kinds)
        reply = next(m for m in client.messages if m["type"] == "reply")
        assert reply["response"] == "You said: Hello there. How are you today?"
        assert all(m["callId"] == client.call_id for m in client.messages if "callId" in m)

        # The reply track carried sound: a 220 Hz tone at 0.3 of full scale has an RMS of ~7000.
        loud = [(at, rms) for at, rms in client.heard if rms > 2000]
        assert len(loud) * 0.02 > 2.0  # ~2.5 s of the two sentences
        assert client.mic.speech_ended_at is not None
        heard_after = loud[0][0] - client.mic.speech_ended_at
        stages = next(m for m in client.messages if m["type"] == "metrics")["ms"]
        print(
            f"\nover WebRTC: end of speech -> first audible frame at the client {heard_after * 1000:.0f} ms; {stages}"
        )
        # the reply is heard after the question ends (its latency is bench/voice.py's to measure)
        assert heard_after > 0
        messages = await server.store.list_messages(session_key(LOCAL_USER.id, SID))
        assert [m.role for m in messages] == ["user", "assistant"]
        assert b"parley_voice_active_calls 1.0" in metrics.render()[0]
    finally:
        r = await server.http.post("/api/hangup", json={"callId": client.call_id})
        await client.close()
    assert r.json() == {"callId": client.call_id, "closed": True}
    assert len(server.calls) == 0


async def test_sequential_calls_leave_no_tasks_or_peers_behind(server: Server) -> None:
    gc.collect()
    tasks_before = {t.get_name() for t in asyncio.all_tasks()}
    peers_before = sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects())
    for i in range(LEAK_CALLS):
        client = await dial(server.http)
        deadline = time.monotonic() + 5
        while client.channel.readyState != "open":
            assert time.monotonic() < deadline, "data channel did not open"
            await asyncio.sleep(0.01)
        if i % 2:  # hang up over the data channel, as a closing tab would
            client.channel.send(json.dumps({"type": "hangup"}))
            while len(server.calls):
                await asyncio.sleep(0.01)
        else:
            r = await server.http.post("/api/hangup", json={"callId": client.call_id})
            assert r.status_code == 200
        await client.close()
    del client
    assert len(server.calls) == 0
    await asyncio.sleep(0.2)  # aiortc's own transports finish their last callbacks
    gc.collect()
    leaked = {t.get_name() for t in asyncio.all_tasks()} - tasks_before
    assert not leaked
    assert sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects()) == peers_before


async def test_a_call_whose_browser_vanishes_is_closed_when_idle(server: Server) -> None:
    client = await dial(server.http)
    deadline = time.monotonic() + 5
    while client.channel.readyState != "open":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    client.mic.stop()  # the microphone stops sending, as when a laptop lid closes
    assert len(server.calls) == 1
    deadline = time.monotonic() + 5
    while len(server.calls):
        assert time.monotonic() < deadline, "the idle call was not closed"
        await asyncio.sleep(0.05)
    await client.close()


async def test_signalling_errors_have_the_one_error_shape(server: Server) -> None:
    http = server.http
    assert (await http.get("/api/ice")).json() == {"iceServers": [], "mode": "direct"}
    r = await http.post("/api/offer", json={"sdp": "v=0 nonsense", "type": "offer", "sessionId": SID})
    assert r.status_code == 400 and r.json()["field"] == "sdp" and r.json()["code"] == "invalid_input"
    r = await http.post("/api/offer", json={"sdp": "v=0", "type": "answer", "sessionId": SID})
    assert r.status_code == 400 and r.json()["field"] == "type"
    r = await http.post("/api/offer", json={"sdp": "v=0", "type": "offer", "sessionId": "../etc"})
    assert r.status_code == 400 and r.json()["field"] == "sessionId"
    r = await http.post("/api/offer", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = await http.post("/api/hangup", json={"callId": "call_nope"})
    assert r.status_code == 404 and r.json() == {
        "error": "no call 'call_nope'",
        "code": "not_found",
        "status": 404,
        "field": "callId",
    }
    assert len(server.calls) == 0
    text = (await http.get("/metrics")).text
    assert "parley_voice_stage_seconds_bucket" in text or "parley_voice_active_calls" in text


async def test_ice_servers_come_from_configuration_in_the_browser_shape() -> None:
    servers = parse_ice_servers(
        [
            {"urls": "stun:stun.example.org:3478"},
            {
                "urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:53"],
                "username": "u",
                "credential": "p",
            },
        ]
    )
    calls = CallRegistry(
        sessions=None,
        vad=None,
        stt=FixedLatencySTT(),
        tts=FixedLatencyTTS(),
        config=CallConfig(ice_servers=servers),
    )  # type: ignore[arg-type]
    async with http_client(calls) as http:
        body = (await http.get("/api/ice")).json()
        # port 53 is blocked by browsers: that URL is left out
        assert body == {
            "iceServers": [
                {"urls": ["stun:stun.example.org:3478"]},
                {"urls": ["turn:turn.example.org:3478?transport=udp"], "username": "u", "credential": "p"},
            ],
            "mode": "direct",
        }
        r = await http.post("/api/offer", json={"sdp": "v=0", "type": "offer", "sessionId": SID})
        assert r.status_code == 503 and r.json()["field"] == "PARLEY_VAD"  # no VAD: no calls
    with pytest.raises(ConfigError, match="needs username and credential"):
        parse_ice_servers([{"urls": "turn:turn.example.org"}])
    with pytest.raises(ConfigError, match="is not a stun"):
        parse_ice_servers([{"urls": "http://example.org"}])


def _released_at(buffer: JitterBuffer) -> int:
    """The packet (of a 20 ms Opus stream) whose arrival releases the first frame."""
    for seq in range(16):
        packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=960 * seq, payload=b"x")
        packet._data = b"x"  # type: ignore[attr-defined]  # what aiortc's depayloader sets
        if buffer.add(packet)[1] is not None:
            return seq
    raise AssertionError("no frame released")


async def test_the_servers_audio_receiver_releases_an_in_order_frame_as_it_arrives(server: Server) -> None:
    pc = RTCPeerConnection()
    pc.addTrack(MicTrack())
    await pc.setLocalDescription(await pc.createOffer())
    r = await server.http.post(
        "/api/offer", json={"sdp": pc.localDescription.sdp, "type": "offer", "sessionId": SID}
    )
    call_id = r.json()["callId"]
    try:
        # The answer is not applied: no packet reaches the server's receiver but ours.
        server_pc = server.calls._peers[call_id]._pc
        assert server_pc is not None
        (audio,) = [t for t in server_pc.getTransceivers() if t.kind == "audio"]
        buffer = audio_jitter_buffer(audio.receiver)
        assert buffer is not None
        assert isinstance(buffer, ImmediateJitterBuffer)
        assert _released_at(buffer) == 0  # at once, where aiortc's default is 80 ms behind
        (client_audio,) = pc.getTransceivers()
        client_buffer = audio_jitter_buffer(client_audio.receiver)
        assert client_buffer is not None and _released_at(client_buffer) == 4  # the default, untouched
    finally:
        await server.http.post("/api/hangup", json={"callId": call_id})
        await pc.close()


def test_an_aiortc_that_keeps_its_jitter_buffer_elsewhere_keeps_its_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = SimpleNamespace()  # no jitter buffer where aiortc 1.x keeps it
    assert shorten_jitter_buffer(receiver) is False  # type: ignore[arg-type]
    assert "default buffering" in caplog.text
