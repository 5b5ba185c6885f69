"""Cloudflare mode over real parts: Parley on uvicorn, the `parley sfu` stand-in, aiortc callers.

The caller (`SFUCaller`, the Python twin of static/sfu.js) publishes espeak-ng speech from its
own SFU session; Parley's assistant participant pulls it through the stand-in, answers with the
same pipeline as a direct call (Silero VAD, the session's turn, fixed-latency STT/LLM/TTS) and
publishes its voice, which the caller pulls and measures. Events come over the session WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import websockets
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.rtc.sfu_peer import Recovery
from parley.standins.server import BackgroundServer
from parley.standins.sfu.app import create_app as create_sfu
from parley.standins.sfu.caller import SFUCaller
from tests.conftest import ServerFactory, make_settings
from tests.rtc.test_loopback import MicTrack
from tests.voice.test_pipeline import speech

APP_ID = "parley-test"
APP_SECRET = "sfu-app-secret-never-shown"
SID = "sfu-chat"
TEXT = "Hello there. How are you today?"


@pytest.fixture
def sfu() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_sfu(app_id=APP_ID, app_secret=APP_SECRET)) as server:
        yield server


def cloudflare_server(serve: ServerFactory, sfu: BackgroundServer, tmp_path: Path) -> BackgroundServer:
    settings = make_settings(
        tmp_path / "data",
        vad="silero",
        rtc="cloudflare",
        cloudflare_realtime_app_id=APP_ID,
        cloudflare_realtime_app_secret=APP_SECRET,
        realtime_base_url=f"{sfu.url}/v1",
        call_idle_seconds=20.0,
    )
    server = serve(
        settings=settings,
        chat=EchoChat(first_token_delay=0.2, token_interval=1 / 30),
        stt=FixedLatencySTT(delay=0.1, text=TEXT),
        tts=FixedLatencyTTS(first_byte=0.1),
    )
    calls = server.app.state.services.calls
    # Notice a dropped session sooner than the default (3 s of silence), retry sooner too.
    calls.config = type(calls.config)(
        idle_seconds=20.0,
        voice=calls.config.voice,
        recovery=Recovery(media_timeout=1.0, backoff=0.2),
    )
    return server


class Listener:
    """Reads every voice track the caller pulls; (monotonic, rms) per frame."""

    def __init__(self, caller: SFUCaller) -> None:
        self.heard: list[tuple[float, float]] = []
        self._task = asyncio.create_task(self._run(caller))
        self._readers: list[asyncio.Task[None]] = []

    async def _run(self, caller: SFUCaller) -> None:
        while True:
            track = await caller.voice_tracks.get()
            self._readers.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            samples = frame.to_ndarray().astype(np.float64)
            self.heard.append((time.monotonic(), float(np.sqrt(np.mean(samples**2)))))

    def loud_since(self, since: float) -> list[float]:
        return [at for at, rms in self.heard if rms > 2000 and at >= since]

    async def aclose(self) -> None:
        for task in (self._task, *self._readers):
            task.cancel()
        await asyncio.gather(self._task, *self._readers, return_exceptions=True)


class Events:
    """The session's WebSocket events."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def until(self, kind: str, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.seen:
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                self.seen.remove(event)
                return event
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind} {match}; saw {[e['type'] for e in self.seen]}"
            try:
                event = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            except TimeoutError:
                continue
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event
            self.seen.append(event)


@asynccontextmanager
async def call(server: BackgroundServer) -> AsyncIterator[tuple[SFUCaller, Listener, Events]]:
    ws_url = server.url.replace("http://", "ws://") + f"/ws?sessionId={SID}"
    async with websockets.connect(ws_url) as ws:
        events = Events(ws)
        await events.until("connected")
        caller = SFUCaller(server.url, SID, MicTrack())
        listener = Listener(caller)
        try:
            await caller.connect()
            yield caller, listener, events
        finally:
            await caller.hangup()
            await listener.aclose()
            await caller.aclose()


async def speak_and_hear(caller: SFUCaller, listener: Listener, events: Events) -> float:
    """Say the sentence; returns seconds from its end to the first loud reply frame heard."""
    mic = caller.mic
    assert isinstance(mic, MicTrack)
    started = time.monotonic()
    mic.say(speech("hello there how are you today"))
    reply = await events.until("reply", timeout=20.0)
    assert reply["response"] == f"You said: {TEXT}"
    deadline = time.monotonic() + 10
    while not listener.loud_since(started):
        assert time.monotonic() < deadline, "the reply was never heard at the caller"
        await asyncio.sleep(0.05)
    assert mic.speech_ended_at is not None
    heard = listener.loud_since(started)[0] - mic.speech_ended_at
    await events.until("assistant_stopped_speaking", callId=caller.call_id)
    return heard


async def sfu_tracks(sfu: BackgroundServer, sid: str | None) -> list[tuple[Any, ...]]:
    """What the stand-in SFU holds for session `sid`: (location, mid, trackName, status) per track."""
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{sfu.url}/_standin/sessions", headers={"Authorization": f"Bearer {APP_SECRET}"})
    assert r.status_code == 200, r.text
    (session,) = [s for s in r.json()["sessions"] if s["sessionId"] == sid]
    return [(t.get("location"), t.get("mid"), t.get("trackName"), t.get("status")) for t in session["tracks"]]


async def test_a_turn_through_the_sfu_is_heard_and_stored(
    serve: ServerFactory, sfu: BackgroundServer, tmp_path: Path
) -> None:
    server = cloudflare_server(serve, sfu, tmp_path)
    async with call(server) as (caller, listener, events):
        await asyncio.sleep(0.5)
        after = await speak_and_hear(caller, listener, events)
        print(f"\nthrough the SFU stand-in: end of speech -> first audible frame {after * 1000:.0f} ms")
        for kind in ("user_started_speaking", "transcript", "assistant_started_speaking", "metrics"):
            await events.until(kind, callId=caller.call_id)
        calls = server.app.state.services.calls
        assert len(calls) == 1
        # The assistant is a participant of its own: two sessions at the SFU, each pulling the other.
        voice_sid = caller.voice[0] if caller.voice else None
        assert voice_sid and voice_sid != caller.sfu_session_id
    async with httpx.AsyncClient(base_url=server.url) as http:
        history = (await http.get("/api/history", params={"sessionId": SID})).json()
    turns = history["messages"] if isinstance(history, dict) else history
    assert [(m["role"], m["content"]) for m in turns] == [("user", TEXT), ("assistant", f"You said: {TEXT}")]
    deadline = time.monotonic() + 5
    while len(server.app.state.services.calls):
        assert time.monotonic() < deadline, "hang-up left the call open"
        await asyncio.sleep(0.05)


async def test_the_call_recovers_when_the_sfu_drops_the_assistants_session(
    serve: ServerFactory, sfu: BackgroundServer, tmp_path: Path
) -> None:
    server = cloudflare_server(serve, sfu, tmp_path)
    async with call(server) as (caller, listener, events):
        await asyncio.sleep(0.5)
        await speak_and_hear(caller, listener, events)
        assert caller.voice is not None
        old_voice = caller.voice[0]

        dropped_at = time.monotonic()
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{sfu.url}/_standin/sessions/{old_voice}/drop",
                headers={"Authorization": f"Bearer {APP_SECRET}"},
            )
        assert r.status_code in (200, 204), r.text
        await events.until("call_reconnecting", callId=caller.call_id)
        moved = await events.until("call_track", callId=caller.call_id)
        resumed = time.monotonic() - dropped_at
        assert moved["sfuSessionId"] != old_voice
        assert resumed < 10.0, f"the call took {resumed:.1f} s to resume"
        await caller.voice_moved(moved["sfuSessionId"], moved["trackName"])

        # The next turn works end to end on the new session.
        await asyncio.sleep(0.5)
        await speak_and_hear(caller, listener, events)
        peer = server.app.state.services.calls.sfu_call(caller.call_id)
        assert peer.recoveries == 1
        print(f"\nrecovered {resumed:.2f} s after the SFU dropped the assistant's session")


async def test_a_second_browser_cannot_touch_the_first_ones_session(
    serve: ServerFactory, sfu: BackgroundServer, tmp_path: Path
) -> None:
    server = cloudflare_server(serve, sfu, tmp_path)
    async with call(server) as (caller, _listener, _events):
        assert caller.voice is not None and caller.pulled_mid is not None
        victim = caller.sfu_session_id
        before = await sfu_tracks(sfu, victim)
        assert len(before) == 2  # the mic it publishes and the voice it pulls
        async with httpx.AsyncClient(base_url=server.url) as other:
            own = (await other.post("/api/sfu/sessions/new")).json()
            assert own["sessionId"] != victim
            theirs = {"X-Parley-Token": own["token"]}
            attempts = [
                # its own token on the victim's session
                (
                    "POST",
                    f"/api/sfu/sessions/{victim}/tracks/new",
                    {
                        "tracks": [
                            {"location": "remote", "sessionId": caller.voice[0], "trackName": caller.voice[1]}
                        ]
                    },
                    theirs,
                ),
                (
                    "PUT",
                    f"/api/sfu/sessions/{victim}/tracks/close",
                    {"tracks": [{"mid": caller.pulled_mid}], "force": True},
                    theirs,
                ),
                (
                    "PUT",
                    f"/api/sfu/sessions/{victim}/renegotiate",
                    {"sessionDescription": {"type": "answer", "sdp": "v=0"}},
                    theirs,
                ),
                ("GET", f"/api/sfu/sessions/{victim}", None, theirs),
                # no token at all, and a forged one
                (
                    "PUT",
                    f"/api/sfu/sessions/{victim}/tracks/close",
                    {"tracks": [{"mid": caller.pulled_mid}], "force": True},
                    {},
                ),
                (
                    "PUT",
                    f"/api/sfu/sessions/{victim}/tracks/close",
                    {"tracks": [{"mid": caller.pulled_mid}], "force": True},
                    {"X-Parley-Token": caller.token[:-2] + "xx" if caller.token else "x"},
                ),
                # pulling the victim's mic, or the victim's assistant, into its own session
                (
                    "POST",
                    f"/api/sfu/sessions/{own['sessionId']}/tracks/new",
                    {"tracks": [{"location": "remote", "sessionId": victim, "trackName": "user-mic"}]},
                    theirs,
                ),
                (
                    "POST",
                    f"/api/sfu/sessions/{own['sessionId']}/tracks/new",
                    {
                        "tracks": [
                            {"location": "remote", "sessionId": caller.voice[0], "trackName": caller.voice[1]}
                        ]
                    },
                    theirs,
                ),
                (
                    "POST",
                    f"/api/sfu/sessions/{own['sessionId']}/tracks/new",
                    {
                        "tracks": [{"location": "remote", "sessionId": victim, "trackName": "user-mic"}],
                        "autoDiscover": True,
                    },
                    theirs,
                ),
                # moving the victim's call to its own session
                (
                    "PUT",
                    f"/api/sfu/calls/{caller.call_id}/mic",
                    {"sfuSessionId": own["sessionId"], "trackName": "user-mic"},
                    theirs,
                ),
            ]
            for method, path, body, headers in attempts:
                r = await other.request(method, path, json=body, headers=headers)
                assert r.status_code == 403, (method, path, r.status_code, r.text)
                error = r.json()
                assert error["code"] == "forbidden" and error["field"], error
        # Nothing changed at the SFU for the victim, and its call still runs.
        assert await sfu_tracks(sfu, victim) == before
        assert caller.call_id in server.app.state.services.calls
