"""Parley as a bridge: a browser's WebRTC call whose AI is a remote XiaoZhi server (Parley's own here).

    aiortc client (the browser) --WebRTC--> bridging Parley (PARLEY_VOICE_BACKEND=xiaozhi, in this
    loop) --OTA + WebSocket, 16 kHz 60 ms Opus--> tap (records) --> upstream Parley (real uvicorn)

The upstream runs the real XiaoZhi server with Silero VAD and the fixed test providers; the
bridging Parley's own STT and model must never answer (they would say something else). Speech is
the bundled Piper voice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.bus.memory import LocalBus
from parley.providers.factory import build_vad
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.rtc.registry import CallConfig, CallRegistry
from parley.sessions.keys import session_key
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.standins.server import BackgroundServer
from parley.standins.sfu.app import create_app as create_sfu
from parley.store.sqlite import SQLiteStore
from parley.store.users import LOCAL_USER
from parley.voice.pipeline import VoiceConfig
from parley.xiaozhi.bridge import BridgeCall
from parley.xiaozhi.upstream import UpstreamConfig
from tests.conftest import ServerFactory, make_settings
from tests.rtc.test_loopback import Client, MicTrack, dial, http_client
from tests.rtc.test_sfu_call import APP_ID, APP_SECRET
from tests.rtc.test_sfu_call import SID as SFU_SID
from tests.rtc.test_sfu_call import call as sfu_call
from tests.xiaozhi.conftest import Speech
from tests.xiaozhi.device import Decoder
from tests.xiaozhi.tap import Tap
from tests.xiaozhi.test_bridge_audio import bandwidth_of
from tests.xiaozhi.test_ota import parley

HEARD = "turn on the lights"
REPLY = f"You said: {HEARD}"
#: what the bridging Parley would hear and say if its own pipeline ran
LOCAL = "the local pipeline must not answer"
SID = "bridged"
SAYING = "Please turn on the kitchen lights."


@dataclass
class Upstream:
    server: BackgroundServer
    tap: Tap
    tts: FixedLatencyTTS

    @property
    def ota_url(self) -> str:
        return f"{self.server.url}/xiaozhi/ota/"


@asynccontextmanager
async def upstream(
    serve: ServerFactory,
    tmp_path: Path,
    *,
    secs_per_char: float = 0.05,
    data_dir: Path | None = None,
    **overrides: Any,
) -> AsyncIterator[Upstream]:
    tap = await Tap().start()
    settings = make_settings(
        data_dir or tmp_path / "upstream",
        vad="silero",
        public_url=f"http://127.0.0.1:{tap.port}",
        **overrides,
    )
    tts = FixedLatencyTTS(first_byte=0.05, secs_per_char=secs_per_char)
    server = serve(
        chat=EchoChat(),
        stt=FixedLatencySTT(delay=0.05, text=HEARD),
        tts=tts,
        vad=build_vad(settings),
        settings=settings,
    )
    tap.target = server.url.replace("http", "ws", 1) + "/xiaozhi/v1/"
    try:
        yield Upstream(server, tap, tts)
    finally:
        await tap.aclose()


@dataclass
class Bridge:
    calls: CallRegistry
    store: SQLiteStore
    http: Any
    sessions: SessionRegistry

    def call(self, client: Client) -> BridgeCall:
        call = self.calls._peers[client.call_id]._call
        assert isinstance(call, BridgeCall)
        return call

    async def history(self, session_id: str = SID) -> list[tuple[str, str, str]]:
        messages = await self.store.list_messages(session_key(LOCAL_USER.id, session_id))
        return [(m.role, m.content, m.status.value) for m in messages]


@asynccontextmanager
async def bridging(tmp_path: Path, ota_url: str) -> AsyncIterator[Bridge]:
    """The bridging Parley: real sessions and SQLite, the real rtc routes, calls bridged upstream."""
    settings = make_settings(
        tmp_path / "bridge", vad="silero", voice_backend="xiaozhi", xiaozhi_ota_url=ota_url
    )
    upstream_config = UpstreamConfig.from_settings(settings)
    assert upstream_config is not None
    store = SQLiteStore(tmp_path / "bridge.db")
    await store.open()
    sessions = SessionRegistry(
        store=store,
        chat=EchoChat(),
        bus=LocalBus(),
        config=SessionConfig(system_prompt="sys", history_limit=20, max_tokens=128, max_queued_turns=4),
    )
    calls = CallRegistry(
        sessions=sessions,
        vad=build_vad(settings),
        stt=FixedLatencySTT(text=LOCAL),
        tts=FixedLatencyTTS(),
        config=CallConfig(
            idle_seconds=10.0,
            voice=VoiceConfig.from_settings(settings),
            bridge=replace(upstream_config, activation_poll_seconds=0.1),
        ),
    )
    try:
        async with http_client(calls) as http:
            yield Bridge(calls, store, http, sessions)
    finally:
        await calls.aclose()
        await sessions.aclose()
        await store.aclose()


async def wait_for(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def loud(client: Client, since: float = 0.0) -> list[float]:
    """When the client heard reply audio (a 220 Hz tone at 0.3 of full scale: RMS ~7000)."""
    return [at for at, rms in client.heard if rms > 2000 and at >= since]


async def test_a_browser_call_is_answered_by_the_remote_xiaozhi_server(
    serve: ServerFactory, tmp_path: Path, speech: Speech
) -> None:
    async with upstream(serve, tmp_path) as up, bridging(tmp_path, up.ota_url) as bridge:
        client = await dial(bridge.http, SID)
        try:
            call = bridge.call(client)
            await call.connected.wait()
            await client.mic.flowing.wait()
            client.mic.say(speech(SAYING))
            await client.until("reply", timeout=30)
            await wait_for(lambda: len(loud(client)) * 0.02 > 1.0, "the reply's audio at the browser")

            # the upstream was greeted as a device and got 16 kHz Opus in exact 60 ms packets
            hello = up.tap.up_json()[0]
            assert hello["type"] == "hello" and hello["audio_params"] == {
                "format": "opus",
                "sample_rate": 16000,
                "channels": 1,
                "frame_duration": 60,
            }
            assert {"type": "listen", "state": "start", "mode": "realtime"}.items() <= up.tap.up_json()[
                1
            ].items()
            packets = up.tap.up_audio()
            assert len(packets) > 30  # the speech is ~2 s
            decoder = Decoder()
            assert {decoder.samples(p) for p in packets} == {2880}
            assert {bandwidth_of(p) for p in packets} <= {"narrow", "medium", "wide"}

            # the browser saw a normal voice turn, with the upstream's words
            kinds = client.types()
            for kind in ("user_started_speaking", "transcript", "user_message", "chunk", "reply"):
                assert kind in kinds, kinds
            transcript = next(m for m in client.messages if m["type"] == "transcript")
            assert transcript["text"] == HEARD
            reply = next(m for m in client.messages if m["type"] == "reply")
            assert reply["message"]["content"] == REPLY
            assert "assistant_started_speaking" in kinds
            await client.until("assistant_stopped_speaking")
            assert await bridge.history() == [("user", HEARD, "complete"), ("assistant", REPLY, "complete")]
            # the reply played through without holes (a busy loop may cost a frame or two)
            heard = [rms > 2000 for _, rms in client.heard]
            spoken = heard[heard.index(True) : len(heard) - heard[::-1].index(True)]
            assert len(spoken) > 50 and spoken.count(False) <= 3, f"{spoken.count(False)} silent frames"
            metrics = next(m for m in client.messages if m["type"] == "metrics")
            print(
                f"\nbridged: end of speech -> stt {metrics['ms']['transcript']} ms, "
                f"-> first frame {metrics['ms']['first_frame']} ms"
            )
        finally:
            await bridge.http.post("/api/hangup", json={"callId": client.call_id})
            await client.close()
        assert len(bridge.calls) == 0
        assert [t.get_name() for t in asyncio.all_tasks() if call.id in t.get_name()] == []
        # the upstream socket is closed with the call
        await wait_for(lambda: not up.tap._open, "the upstream socket to close")


async def test_speaking_over_the_reply_sends_abort_upstream_and_keeps_what_was_heard(
    serve: ServerFactory, tmp_path: Path, speech: Speech
) -> None:
    async with upstream(serve, tmp_path, secs_per_char=0.25) as up, bridging(tmp_path, up.ota_url) as bridge:
        client = await dial(bridge.http, SID)
        try:
            call = bridge.call(client)
            await call.connected.wait()
            await client.mic.flowing.wait()
            client.mic.say(speech(SAYING))
            await client.until("assistant_started_speaking", timeout=30)
            await wait_for(lambda: len(loud(client)) * 0.02 > 1.0, "a second of the reply")
            client.mic.say(speech(SAYING, before=0.0))
            async with asyncio.timeout(20):
                await up.tap.aborted.wait()
            aborted = time.monotonic()
            await client.until("interrupted", timeout=20)
            # the barge-in's own words reached the upstream, which takes them as the next turn
            await wait_for(lambda: client.types().count("user_message") == 2, "the second turn")
            answered = time.monotonic()
            # silent from then on (what was already sent drains through the client's jitter buffer
            # within ~100 ms) until the next reply, whose words came after the abort
            late = loud(client, aborted + 0.3)
            assert late == [] or late[0] >= answered
            history = await bridge.history()
            assert history[0] == ("user", HEARD, "complete")
            role, heard, status = history[1]
            assert role == "assistant" and status == "interrupted"
            assert REPLY.startswith(heard) and len(heard) < len(REPLY)
            assert history[2][:2] == ("user", HEARD)
            barge_in = call.barge_ins[0]
            assert barge_in.abort_sent_at is not None
            # the upstream hears the same speech (it was told the browser cancels echo) and may
            # stop on its own just before the abort lands: then there is no stop to time
            stopped = barge_in.stopped_at
            upstream_ms = (
                f"{(stopped - barge_in.abort_sent_at) * 1000:.0f} ms" if stopped else "before the abort"
            )
            print(
                f"\nbridged barge-in: decided -> silent {(barge_in.flushed_at - barge_in.decided_at) * 1000:.2f} ms, "
                f"abort sent -> the upstream's tts stop {upstream_ms}"
            )
        finally:
            await bridge.http.post("/api/hangup", json={"callId": client.call_id})
            await client.close()


async def test_a_reply_stopped_from_another_tab_silences_the_upstream_too(
    serve: ServerFactory, tmp_path: Path, speech: Speech
) -> None:
    async with upstream(serve, tmp_path, secs_per_char=0.25) as up, bridging(tmp_path, up.ota_url) as bridge:
        client = await dial(bridge.http, SID)
        try:
            await bridge.call(client).connected.wait()
            await client.mic.flowing.wait()
            client.mic.say(speech(SAYING))
            await client.until("assistant_started_speaking", timeout=30)
            assert bridge.sessions.get(session_key(LOCAL_USER.id, SID)).stop() is not None  # /api/stop
            async with asyncio.timeout(20):
                await up.tap.aborted.wait()
            await client.until("cancelled", timeout=20)
            history = await bridge.history()
            assert history[0] == ("user", HEARD, "complete") and history[1][2] == "cancelled"
        finally:
            await bridge.http.post("/api/hangup", json={"callId": client.call_id})
            await client.close()


def bridge_history_roles(client: Client) -> list[str]:
    """The replies the browser saw end (complete or cut short)."""
    return [m["type"] for m in client.messages if m["type"] in ("reply", "interrupted")]


async def test_an_unreachable_upstream_is_an_error_event_and_the_call_survives(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    ota = f"http://127.0.0.1:{unused_tcp_port}/xiaozhi/ota/"
    async with bridging(tmp_path, ota) as bridge:
        client = await dial(bridge.http, SID)
        try:
            await client.until("error", timeout=20)
            error = next(m for m in client.messages if m["type"] == "error")
            assert error["stage"] == "upstream"
            assert error["error"]["code"] == "unavailable" and error["error"]["status"] == 503
            assert error["error"]["field"] == "PARLEY_XIAOZHI_OTA_URL"
            assert f"the XiaoZhi server at {ota} is unreachable" in error["error"]["error"]
            assert len(bridge.calls) == 1  # the call is still up
        finally:
            r = await bridge.http.post("/api/hangup", json={"callId": client.call_id})
            await client.close()
        assert r.json()["closed"] is True and len(bridge.calls) == 0


async def test_an_upstream_that_closes_mid_call_is_an_error_and_the_next_words_reconnect(
    serve: ServerFactory, tmp_path: Path, speech: Speech
) -> None:
    async with upstream(serve, tmp_path) as up, bridging(tmp_path, up.ota_url) as bridge:
        client = await dial(bridge.http, SID)
        try:
            call = bridge.call(client)
            await call.connected.wait()
            await client.mic.flowing.wait()
            await up.tap.drop(1011, "upstream restarting")
            await client.until("error", timeout=20)
            error = next(m for m in client.messages if m["type"] == "error")
            assert error["stage"] == "upstream" and error["error"]["code"] == "unavailable"
            assert "closed the socket (code 1011: upstream restarting)" in error["error"]["error"]
            client.mic.say(speech(SAYING))
            await client.until("reply", timeout=30)
            assert up.tap.connections == 2
            assert await bridge.history() == [("user", HEARD, "complete"), ("assistant", REPLY, "complete")]
        finally:
            await bridge.http.post("/api/hangup", json={"callId": client.call_id})
            await client.close()


async def test_two_calls_at_once_are_two_devices_and_one_losing_its_upstream_leaves_the_other(
    serve: ServerFactory, tmp_path: Path, speech: Speech
) -> None:
    async with upstream(serve, tmp_path) as up, bridging(tmp_path, up.ota_url) as bridge:
        first, second = await dial(bridge.http, "first"), await dial(bridge.http, "second")
        try:
            one, two = bridge.call(first), bridge.call(second)
            await one.connected.wait()
            await two.connected.wait()
            # one device identity per call: the upstream keeps one socket per device
            assert len(set(up.tap.devices)) == 2
            assert one._identity is not None
            await up.tap.drop(device=one._identity.device_id)
            await first.until("error", timeout=20)
            await second.mic.flowing.wait()
            second.mic.say(speech(SAYING))
            await second.until("reply", timeout=30)
            assert "error" not in second.types()
            assert await bridge.history("second") == [
                ("user", HEARD, "complete"),
                ("assistant", REPLY, "complete"),
            ]
        finally:
            for client in (first, second):
                await bridge.http.post("/api/hangup", json={"callId": client.call_id})
                await client.close()


@pytest.fixture
def sfu() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_sfu(app_id=APP_ID, app_secret=APP_SECRET)) as server:
        yield server


async def test_a_call_through_the_cloudflare_sfu_is_bridged_too(
    serve: ServerFactory, sfu: BackgroundServer, tmp_path: Path, speech: Speech
) -> None:
    async with upstream(serve, tmp_path) as up:
        settings = make_settings(
            tmp_path / "bridge",
            vad="silero",
            rtc="cloudflare",
            cloudflare_realtime_app_id=APP_ID,
            cloudflare_realtime_app_secret=APP_SECRET,
            realtime_base_url=f"{sfu.url}/v1",
            voice_backend="xiaozhi",
            xiaozhi_ota_url=up.ota_url,
        )
        server = serve(
            settings=settings, chat=EchoChat(), stt=FixedLatencySTT(text=LOCAL), tts=FixedLatencyTTS()
        )
        calls = server.app.state.services.calls
        # create_app does not pass the bridge to the call registry yet (app.py): given here as it would
        calls.config = replace(calls.config, bridge=UpstreamConfig.from_settings(settings))
        async with sfu_call(server) as (caller, listener, events):
            bridged = calls._peers[caller.call_id]._call
            assert isinstance(bridged, BridgeCall)
            await wait_for(bridged.connected.is_set, "the upstream socket")  # another thread's loop
            mic = caller.mic
            assert isinstance(mic, MicTrack)
            await mic.flowing.wait()
            started = time.monotonic()
            mic.say(speech(SAYING))
            reply = await events.until("reply", timeout=30)
            assert reply["response"] == REPLY
            await wait_for(
                lambda: len(listener.loud_since(started)) * 0.02 > 1.0, "the reply through the SFU"
            )
            assert up.tap.connections == 1
        async with httpx.AsyncClient(base_url=server.url) as http:
            history = (await http.get("/api/history", params={"sessionId": SFU_SID})).json()["messages"]
        assert [(m["role"], m["content"]) for m in history] == [("user", HEARD), ("assistant", REPLY)]


def test_the_xiaozhi_backend_needs_an_ota_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PARLEY_VOICE_BACKEND=xiaozhi needs PARLEY_XIAOZHI_OTA_URL"):
        make_settings(tmp_path, voice_backend="xiaozhi")
    with pytest.raises(ValueError, match="PARLEY_XIAOZHI_OTA_URL must be an http"):
        make_settings(tmp_path, voice_backend="xiaozhi", xiaozhi_ota_url="ftp://xiaozhi.lan/")
    assert UpstreamConfig.from_settings(make_settings(tmp_path)) is None


async def test_a_server_that_activates_devices_shows_the_code_once_and_then_answers(
    serve: ServerFactory,
    tmp_path: Path,
    speech: Speech,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "upstream"
    monkeypatch.setenv("PARLEY_DATA_DIR", str(data_dir))  # what `parley devices bind` opens
    monkeypatch.delenv("PARLEY_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    async with upstream(serve, tmp_path, data_dir=data_dir, auth="token") as up:
        assert parley(capsys, "users", "add", "alice")[0] == 0
        async with bridging(tmp_path, up.ota_url) as bridge:
            client = await dial(bridge.http, SID)
            try:
                await client.until("error", timeout=20)
                error = next(m for m in client.messages if m["type"] == "error")["error"]
                assert error["field"] == "PARLEY_XIAOZHI_OTA_URL" and "enter the code" in error["error"]
                code = error["error"].split("enter the code ")[1].split()[0]
                bound = parley(capsys, "devices", "bind", code, "--user", "alice")
                assert bound[0] == 0, bound[1]
                await bridge.call(client).connected.wait()  # the poll saw it bound, OTA gave a token
                await client.mic.flowing.wait()
                client.mic.say(speech(SAYING))
                await client.until("reply", timeout=30)
                assert await bridge.history() == [
                    ("user", HEARD, "complete"),
                    ("assistant", REPLY, "complete"),
                ]
            finally:
                await bridge.http.post("/api/hangup", json={"callId": client.call_id})
                await client.close()
        # another process of the bridging Parley (same data dir) is the same, bound, device
        async with bridging(tmp_path, up.ota_url) as bridge:
            client = await dial(bridge.http, "second")
            try:
                await bridge.call(client).connected.wait()
                assert "error" not in client.types()
            finally:
                await bridge.http.post("/api/hangup", json={"callId": client.call_id})
                await client.close()


async def test_parley_serve_settings_bridge_its_calls(
    serve: ServerFactory, tmp_path: Path, speech: Speech
) -> None:
    """The settings alone (PARLEY_VOICE_BACKEND, PARLEY_XIAOZHI_OTA_URL) make the app's calls bridged."""
    async with upstream(serve, tmp_path) as up:
        settings = make_settings(
            tmp_path / "bridging", vad="silero", voice_backend="xiaozhi", xiaozhi_ota_url=up.ota_url
        )
        bridging = serve(
            settings=settings, chat=EchoChat(), stt=FixedLatencySTT(text=LOCAL), tts=FixedLatencyTTS()
        )
        async with httpx.AsyncClient(base_url=bridging.url, timeout=30) as http:
            client = await dial(http, SID)
            try:
                await client.mic.flowing.wait()
                client.mic.say(speech(SAYING))
                await client.until("reply", timeout=30)
                transcript = next(m for m in client.messages if m["type"] == "transcript")
                assert transcript["text"] == HEARD  # the upstream's ears, not the local LOCAL
                assert up.tap.up_json()[0]["type"] == "hello"
            finally:
                await client.close()
            stored = (await http.get("/api/history", params={"sessionId": SID})).json()["messages"]
        assert [(m["role"], m["content"]) for m in stored][:2] == [("user", HEARD), ("assistant", REPLY)]
