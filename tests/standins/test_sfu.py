"""The `parley sfu` stand-in over real parts: uvicorn, httpx, and aiortc peers on loopback.

Each `Client` is what a browser is to Cloudflare: one aiortc peer connection = one SFU session,
publishing with its own offer and pulling by answering the SFU's offer (PUT renegotiate).
Publishers send a steady tone, so a puller can tell by its frequency whose audio it hears.
"""

from __future__ import annotations

import asyncio
import fractions
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from parley.cli import main
from parley.cli_sfu import APP_SECRET_VAR, resolve_credentials
from parley.standins.server import BackgroundServer
from parley.standins.sfu import create_app

APP_ID = "test-app"
SECRET = "test-app-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}
API = f"/v1/apps/{APP_ID}"
RATE = 48000
FRAME = 960
#: RMS (s16) above which a received frame is sound: the tone is ~7000, Opus silence ~0
LOUD = 1000.0


class ToneTrack(MediaStreamTrack):
    """A microphone playing a sine tone: 20 ms frames of 48 kHz mono, in real time."""

    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz = hz
        self._sent = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._sent / RATE - time.monotonic()))
        t = (np.arange(FRAME) + self._sent) / RATE
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * self.hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        frame.pts = self._sent
        self._sent += FRAME
        return frame


class MutedTrack(MediaStreamTrack):
    """A microphone that never yields a frame: its track is published but carries no media."""

    kind = "audio"

    async def recv(self) -> av.AudioFrame:
        await asyncio.Event().wait()
        raise MediaStreamError


class Client:
    """One SFU session driven by an aiortc peer, as a browser drives one through its server."""

    def __init__(self, http: httpx.AsyncClient, session_id: str) -> None:
        self.http = http
        self.id = session_id
        # No ICE servers: host candidates on loopback, and no wait on an unreachable STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.heard: dict[str, list[np.ndarray]] = {}
        self.formats: set[tuple[int, int]] = set()
        self.readers: dict[str, asyncio.Task[None]] = {}
        self.states: list[tuple[float, str]] = []
        self.pc.on("connectionstatechange", lambda: self.states.append((time.monotonic(), self.state)))

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    def path(self, action: str = "") -> str:
        return f"{API}/sessions/{self.id}" + (f"/{action}" if action else "")

    async def offer(self, track: MediaStreamTrack) -> tuple[RTCRtpTransceiver, str]:
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return transceiver, self.pc.localDescription.sdp

    async def publish(self, name: str, track: MediaStreamTrack, *, apply: bool = True) -> dict[str, Any]:
        transceiver, sdp = await self.offer(track)
        r = await self.http.post(
            self.path("tracks/new"),
            json={
                "sessionDescription": {"type": "offer", "sdp": sdp},
                "tracks": [{"location": "local", "mid": transceiver.mid, "trackName": name}],
            },
        )
        assert r.status_code == 200, r.text
        reply: dict[str, Any] = r.json()
        if apply:
            await self.accept(reply)
        return reply

    async def accept(self, reply: dict[str, Any]) -> None:
        answer = reply["sessionDescription"]
        assert answer["type"] == "answer"
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    async def pull(self, session_id: str, name: str) -> dict[str, Any]:
        """Pull a track; when the SFU offers, answer it and start hearing each pulled mid."""
        r = await self.http.post(
            self.path("tracks/new"),
            json={"tracks": [{"location": "remote", "sessionId": session_id, "trackName": name}]},
        )
        assert r.status_code == 200, r.text
        reply: dict[str, Any] = r.json()
        if reply["requiresImmediateRenegotiation"]:
            offer = reply["sessionDescription"]
            assert offer["type"] == "offer"
            await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            for item in reply["tracks"]:
                if "errorCode" not in item:
                    self.listen(item["mid"])
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            answered = await self.http.put(
                self.path("renegotiate"),
                json={"sessionDescription": {"type": "answer", "sdp": self.pc.localDescription.sdp}},
            )
            assert answered.status_code == 200 and answered.json() == {}, answered.text
        return reply

    def listen(self, mid: str) -> None:
        (transceiver,) = [t for t in self.pc.getTransceivers() if t.mid == mid]
        self.heard[mid] = []
        self.readers[mid] = asyncio.create_task(self._read(mid, transceiver.receiver.track))

    async def _read(self, mid: str, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            self.formats.add((frame.sample_rate, frame.samples))
            channels = len(frame.layout.channels)
            self.heard[mid].append(frame.to_ndarray().reshape(-1, channels)[:, 0])

    def loud_frames(self, mid: str) -> int:
        return sum(1 for f in self.heard.get(mid, []) if rms(f) > LOUD)

    async def aclose(self) -> None:
        for task in self.readers.values():
            task.cancel()
        await asyncio.gather(*self.readers.values(), return_exceptions=True)
        await self.pc.close()


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def dominant_hz(frames: list[np.ndarray]) -> float:
    samples = np.concatenate(frames[-25:]).astype(np.float64)  # the last half second
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum))])


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def report(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    r = await http.get("/_standin/sessions", headers=AUTH)
    assert r.status_code == 200, r.text
    (session,) = [s for s in r.json()["sessions"] if s["sessionId"] == session_id]
    return dict(session)


async def wait_for_media(http: httpx.AsyncClient, session_id: str, name: str) -> None:
    """Pull only once the SFU has media of the track, as real clients wait for bytesSent > 0."""
    deadline = time.monotonic() + 5
    while True:
        tracks = (await report(http, session_id))["tracks"]
        if any(t["trackName"] == name and t.get("framesReceived", 0) > 0 for t in tracks):
            return
        assert time.monotonic() < deadline, f"no media of {name} reached the SFU"
        await asyncio.sleep(0.02)


@contextmanager
def running_sfu(connect_timeout: float = 3.0) -> Iterator[BackgroundServer]:
    app = create_app(app_id=APP_ID, app_secret=SECRET, connect_timeout=connect_timeout)
    with BackgroundServer(app) as server:
        yield server


@pytest.fixture
def sfu() -> Iterator[BackgroundServer]:
    with running_sfu() as server:
        yield server


@pytest.fixture
async def http(sfu: BackgroundServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sfu.url, headers=AUTH, timeout=10.0) as client:
        yield client


ClientFactory = Callable[[], Awaitable[Client]]


@pytest.fixture
async def clients(http: httpx.AsyncClient) -> AsyncIterator[ClientFactory]:
    """`await clients()`: a new SFU session with its peer; every peer is closed after the test."""
    opened: list[Client] = []

    async def open_client() -> Client:
        r = await http.post(f"{API}/sessions/new")
        assert r.status_code == 201, r.text
        client = Client(http, r.json()["sessionId"])
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.aclose()


async def publishing(clients: ClientFactory, http: httpx.AsyncClient, name: str, hz: float) -> Client:
    client = await clients()
    reply = await client.publish(name, ToneTrack(hz))
    assert [t.get("errorCode") for t in reply["tracks"]] == [None]
    await wait_for_media(http, client.id, name)
    return client


# -- media -----------------------------------------------------------------------------------------


async def test_a_pulled_track_carries_the_publishers_audio(
    http: httpx.AsyncClient, clients: ClientFactory
) -> None:
    a = await clients()
    published = await a.publish("user-mic", ToneTrack(440))
    (track,) = published["tracks"]
    assert published["requiresImmediateRenegotiation"] is False
    assert track == {"location": "local", "mid": track["mid"], "trackName": "user-mic"}
    await until(lambda: a.state == "connected", "the publisher to connect")
    await wait_for_media(http, a.id, "user-mic")

    b = await clients()  # a fresh session: the pull's offer is what connects it
    pulled = await b.pull(a.id, "user-mic")
    assert pulled["requiresImmediateRenegotiation"] is True
    (item,) = pulled["tracks"]
    mid = item["mid"]
    assert item == {"location": "remote", "sessionId": a.id, "trackName": "user-mic", "mid": mid}
    await until(lambda: b.loud_frames(mid) >= 25, "half a second of the tone at the puller")
    assert abs(dominant_hz(b.heard[mid]) - 440) < 20
    assert b.formats == {(RATE, FRAME)}

    r = await http.get(b.path())
    assert r.status_code == 200
    assert r.json() == {
        "tracks": [
            {"location": "remote", "mid": mid, "sessionId": a.id, "trackName": "user-mic", "status": "active"}
        ],
        "dataChannels": [],
    }
    r = await http.get(a.path())
    assert r.json()["tracks"] == [
        {"location": "local", "mid": track["mid"], "trackName": "user-mic", "status": "active"}
    ]
    publisher = (await report(http, a.id))["tracks"][0]
    assert publisher["framesReceived"] > 0 and publisher["bytesReceived"] > 0 and publisher["pullers"] == 1


async def test_each_side_hears_the_other_as_user_and_assistant_do(
    http: httpx.AsyncClient, clients: ClientFactory
) -> None:
    browser = await publishing(clients, http, "user-mic", 440)
    assistant = await publishing(clients, http, "ai-voice", 660)
    voice = (await browser.pull(assistant.id, "ai-voice"))["tracks"][0]["mid"]
    mic = (await assistant.pull(browser.id, "user-mic"))["tracks"][0]["mid"]
    await until(
        lambda: browser.loud_frames(voice) >= 25 and assistant.loud_frames(mic) >= 25,
        "both sides to hear each other",
    )
    assert abs(dominant_hz(browser.heard[voice]) - 660) < 20  # the assistant, not itself
    assert abs(dominant_hz(assistant.heard[mic]) - 440) < 20
    for client in (browser, assistant):
        statuses = [t["status"] for t in (await http.get(client.path())).json()["tracks"]]
        assert statuses == ["active", "active"]


# -- errors of whole requests ----------------------------------------------------------------------


async def test_whole_request_errors_have_the_documented_codes(
    sfu: BackgroundServer, http: httpx.AsyncClient
) -> None:
    async def expect(response: httpx.Response, status: int, code: str, *words: str) -> None:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"errorCode", "errorDescription"} and body["errorCode"] == code, body
        for word in words:
            assert word in body["errorDescription"], body

    async with httpx.AsyncClient(base_url=sfu.url) as anonymous:
        await expect(await anonymous.post(f"{API}/sessions/new"), 401, "unauthorized")
        wrong = {"Authorization": "Bearer not-the-secret"}
        await expect(await anonymous.post(f"{API}/sessions/new", headers=wrong), 401, "unauthorized")
        await expect(await anonymous.get("/_standin/sessions"), 401, "unauthorized")
    await expect(await http.post("/v1/apps/other-app/sessions/new"), 404, "not_found", "other-app")

    r = await http.post(f"{API}/sessions/new")
    assert r.status_code == 201 and set(r.json()) == {"sessionId"}
    session = f"{API}/sessions/{r.json()['sessionId']}"
    assert (await http.get(session)).json() == {"tracks": [], "dataChannels": []}
    await expect(await http.get(f"{API}/sessions/nope"), 404, "not_found")
    await expect(await http.put(f"{API}/sessions/nope/renegotiate", json={}), 404, "not_found")

    bad_json = await http.post(
        f"{session}/tracks/new", content=b"{", headers={"content-type": "application/json"}
    )
    await expect(bad_json, 400, "decoding_error")
    no_source = {"tracks": [{"location": "remote", "trackName": "x"}]}
    await expect(
        await http.post(f"{session}/tracks/new", json=no_source), 400, "invalid_params", "tracks[0].sessionId"
    )
    no_offer = {"tracks": [{"location": "local", "mid": "0", "trackName": "x"}]}
    await expect(
        await http.post(f"{session}/tracks/new", json=no_offer), 400, "invalid_params", "sessionDescription"
    )
    nonsense = {"sessionDescription": {"type": "offer", "sdp": "v=0 nonsense"}, "tracks": no_offer["tracks"]}
    await expect(await http.post(f"{session}/tracks/new", json=nonsense), 400, "invalid_session_description")

    close = f"{session}/tracks/close"
    await expect(await http.put(close, json={"tracks": [{"mid": "0"}]}), 400, "invalid_params", "force")
    await expect(
        await http.put(close, json={"tracks": [{"mid": "0"}], "force": "yes"}), 400, "invalid_params", "force"
    )
    await expect(await http.put(close, json={"tracks": [], "force": True}), 400, "invalid_params", "tracks")

    answer = {"sessionDescription": {"type": "answer", "sdp": "v=0"}}
    await expect(
        await http.put(f"{session}/renegotiate", json=answer), 400, "invalid_session_description", "no offer"
    )
    offer = {"sessionDescription": {"type": "offer", "sdp": "v=0"}}
    await expect(await http.put(f"{session}/renegotiate", json=offer), 400, "invalid_session_description")
    await expect(
        await http.put(f"{session}/tracks/update", json={"tracks": []}),
        400,
        "invalid_params",
        "not implemented",
    )
    await expect(await http.get("/v1/nowhere"), 404, "not_found")


async def test_a_change_during_another_gets_406_and_a_pull_before_connection_425(
    clients: ClientFactory,
) -> None:
    with running_sfu(connect_timeout=1.0) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10.0) as http:
            session = (await http.post(f"{API}/sessions/new")).json()["sessionId"]
            client = Client(http, session)
            try:
                # The answer is never applied: the SFU's peer cannot get connected.
                reply = await client.publish("user-mic", ToneTrack(440), apply=False)
                assert reply["tracks"][0].get("errorCode") is None
                pull = {"tracks": [{"location": "remote", "sessionId": session, "trackName": "user-mic"}]}
                first = asyncio.create_task(http.post(client.path("tracks/new"), json=pull))
                deadline = time.monotonic() + 5
                while not (await report(http, session))["mutating"]:
                    assert time.monotonic() < deadline, "the pull never started"
                    await asyncio.sleep(0.01)
                second = await http.put(
                    client.path("tracks/close"), json={"tracks": [{"mid": "0"}], "force": True}
                )
                assert second.status_code == 406, second.text
                assert second.json()["errorCode"] == "session_error"
                assert "another change" in second.json()["errorDescription"]
                r = await first
                assert r.status_code == 425, r.text
                assert r.json()["errorCode"] == "session_error"
                assert "not connected" in r.json()["errorDescription"]
            finally:
                await client.aclose()


async def test_the_sfus_offer_must_be_answered_before_the_next_change(
    http: httpx.AsyncClient, clients: ClientFactory
) -> None:
    a = await publishing(clients, http, "user-mic", 440)
    b = await clients()
    pull = {"tracks": [{"location": "remote", "sessionId": a.id, "trackName": "user-mic"}]}
    offered = (await http.post(b.path("tracks/new"), json=pull)).json()
    assert offered["requiresImmediateRenegotiation"] is True
    waiting = await http.post(b.path("tracks/new"), json=pull)
    assert waiting.status_code == 406, waiting.text
    assert "PUT renegotiate" in waiting.json()["errorDescription"]
    assert (await http.get(b.path())).json()["tracks"][0]["status"] == "initializing"

    garbage = {"sessionDescription": {"type": "answer", "sdp": "v=0 nonsense"}}
    r = await http.put(b.path("renegotiate"), json=garbage)
    assert r.status_code == 400 and r.json()["errorCode"] == "invalid_session_description", r.text
    await b.pc.setRemoteDescription(RTCSessionDescription(offered["sessionDescription"]["sdp"], "offer"))
    await b.pc.setLocalDescription(await b.pc.createAnswer())
    answer = {"sessionDescription": {"type": "answer", "sdp": b.pc.localDescription.sdp}}
    r = await http.put(b.path("renegotiate"), json=answer)
    assert r.status_code == 200 and r.json() == {}
    r = await http.put(b.path("renegotiate"), json=answer)  # nothing is waiting any more
    assert r.status_code == 400 and "no offer" in r.json()["errorDescription"]
    await until(lambda: b.state == "connected", "the puller to connect")
    mid = offered["tracks"][0]["mid"]
    r = await http.put(b.path("tracks/close"), json={"tracks": [{"mid": mid}], "force": True})
    assert r.status_code == 200 and r.json()["tracks"] == [{"mid": mid}]


async def test_auto_discover_publishes_each_sending_section_by_its_track_id(
    http: httpx.AsyncClient, clients: ClientFactory
) -> None:
    a = await clients()
    tone = ToneTrack(440)
    transceiver, offer = await a.offer(tone)
    r = await http.post(
        a.path("tracks/new"),
        json={"sessionDescription": {"type": "offer", "sdp": offer}, "tracks": [], "autoDiscover": True},
    )
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["tracks"] == [{"location": "local", "mid": transceiver.mid, "trackName": tone.id}]
    await a.accept(reply)
    await wait_for_media(http, a.id, tone.id)


# -- errors of single tracks -----------------------------------------------------------------------


async def test_track_errors_are_items_of_a_200(http: httpx.AsyncClient, clients: ClientFactory) -> None:
    a = await clients()
    reply = await a.publish("user-mic", MutedTrack())
    assert reply["tracks"][0].get("errorCode") is None
    await until(lambda: a.state == "connected", "the publisher to connect")

    b = await clients()
    r = await http.post(
        b.path("tracks/new"),
        json={
            "tracks": [
                {"location": "remote", "sessionId": a.id, "trackName": "user-mic"},
                {"location": "remote", "sessionId": a.id, "trackName": "nothing"},
                {"location": "remote", "sessionId": "no-such-session", "trackName": "user-mic"},
            ]
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["requiresImmediateRenegotiation"] is False and "sessionDescription" not in body
    assert [t["errorCode"] for t in body["tracks"]] == [
        "empty_track_error",
        "not_found_track_error",
        "not_found_track_error",
    ]
    assert [t["trackName"] for t in body["tracks"]] == ["user-mic", "nothing", "user-mic"]

    again = await a.publish("user-mic", ToneTrack(440))  # the same name, on a new transceiver
    assert again["tracks"][0]["errorCode"] == "repeated_local_track_error"

    # One call publishing a track and pulling one that does not exist: each item says how it went.
    c = await clients()
    transceiver, offer = await c.offer(ToneTrack(660))
    r = await http.post(
        c.path("tracks/new"),
        json={
            "sessionDescription": {"type": "offer", "sdp": offer},
            "tracks": [
                {"location": "local", "mid": transceiver.mid, "trackName": "c-mic"},
                {"location": "local", "mid": "99", "trackName": "elsewhere"},
                {"location": "remote", "sessionId": a.id, "trackName": "nothing"},
            ],
        },
    )
    assert r.status_code == 200, r.text
    mixed = r.json()
    assert [t.get("errorCode") for t in mixed["tracks"]] == [
        None,
        "not_found_track_error",
        "not_found_track_error",
    ]
    await c.accept(mixed)
    await until(lambda: c.state == "connected", "the mixed call's peer to connect")

    r = await http.put(
        c.path("tracks/close"), json={"tracks": [{"mid": "42"}, {"mid": transceiver.mid}], "force": True}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "requiresImmediateRenegotiation": False,
        "tracks": [
            {"mid": "42", "errorCode": "close_track_error", "errorDescription": "no open track has mid '42'"},
            {"mid": transceiver.mid},
        ],
    }


# -- closing -----------------------------------------------------------------------------------------


async def test_closing_tracks_stops_their_media(http: httpx.AsyncClient, clients: ClientFactory) -> None:
    a = await publishing(clients, http, "user-mic", 440)
    b = await clients()
    mid = (await b.pull(a.id, "user-mic"))["tracks"][0]["mid"]
    await until(lambda: b.loud_frames(mid) >= 10, "the tone at the puller")

    # force=true: the SFU stops sending at once (RTCP BYE ends the puller's track), no SDP.
    r = await http.put(b.path("tracks/close"), json={"tracks": [{"mid": mid}], "force": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"requiresImmediateRenegotiation": False, "tracks": [{"mid": mid}]}
    await until(lambda: b.readers[mid].done(), "the puller's track to end")
    heard = len(b.heard[mid])
    await asyncio.sleep(0.3)
    assert len(b.heard[mid]) == heard
    assert (await http.get(b.path())).json()["tracks"][0]["status"] == "inactive"
    assert (await report(http, a.id))["tracks"][0]["pullers"] == 0

    # force=false: the publisher offers its transceiver inactive and gets the SFU's answer.
    (transceiver,) = a.pc.getTransceivers()
    transceiver.direction = "inactive"
    await a.pc.setLocalDescription(await a.pc.createOffer())
    r = await http.put(
        a.path("tracks/close"),
        json={
            "tracks": [{"mid": transceiver.mid}],
            "force": False,
            "sessionDescription": {"type": "offer", "sdp": a.pc.localDescription.sdp},
        },
    )
    assert r.status_code == 200, r.text
    closed = r.json()
    assert closed["requiresImmediateRenegotiation"] is False and closed["tracks"] == [
        {"mid": transceiver.mid}
    ]
    await a.accept(closed)
    assert (await http.get(a.path())).json()["tracks"][0]["status"] == "inactive"
    c = await clients()
    gone = (await c.pull(a.id, "user-mic"))["tracks"][0]
    assert gone["errorCode"] == "not_found_track_error"


async def test_a_dropped_session_ends_its_peer_its_pulls_and_its_api(
    http: httpx.AsyncClient, clients: ClientFactory
) -> None:
    a = await publishing(clients, http, "user-mic", 440)
    await until(lambda: a.state == "connected", "the publisher to connect")
    b = await clients()
    mid = (await b.pull(a.id, "user-mic"))["tracks"][0]["mid"]
    await until(lambda: b.loud_frames(mid) >= 10, "the tone at the puller")

    dropped_at = time.monotonic()
    r = await http.post(f"/_standin/sessions/{a.id}/drop", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"sessionId": a.id, "closed": True}
    # aiortc 1.16 on loopback reports "closed" (not "failed"; it has no "disconnected") about
    # 3 ms after the drop request: the SFU's DTLS close_notify arrives and the peer closes itself.
    await until(lambda: a.state != "connected", "the dropped peer to notice")
    left = a.states[-1]
    print(
        f"\ndropped peer: connectionState {a.state!r} {(left[0] - dropped_at) * 1000:.0f} ms after the drop"
    )
    assert a.state == "closed"

    await asyncio.sleep(0.3)  # frames already on the wire
    heard = len(b.heard[mid])
    await asyncio.sleep(0.5)
    assert len(b.heard[mid]) == heard, "the puller still gets media of a dropped session"
    assert (await http.get(b.path())).json()["tracks"][0]["status"] == "inactive"

    for method, action, body in (
        ("GET", "", None),
        ("POST", "tracks/new", {"tracks": [{"location": "remote", "sessionId": b.id, "trackName": "x"}]}),
        ("PUT", "renegotiate", {"sessionDescription": {"type": "answer", "sdp": "v=0"}}),
        ("PUT", "tracks/close", {"tracks": [{"mid": "0"}], "force": True}),
    ):
        r = await http.request(method, a.path(action), json=body)
        assert r.status_code == 410, (action, r.text)
        assert r.json() == {"errorCode": "session_error", "errorDescription": f"session {a.id} is closed"}
    state = await report(http, a.id)
    assert (
        state["closed"] is True and state["closeReason"] == "dropped" and state["connectionState"] == "closed"
    )
    assert (await report(http, b.id))["closed"] is False


async def test_the_older_sessions_new_answers_an_offer(http: httpx.AsyncClient) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        r = await http.post(
            f"{API}/sessions/new",
            json={"sessionDescription": {"type": "offer", "sdp": pc.localDescription.sdp}},
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert (
            set(body) == {"sessionId", "sessionDescription"}
            and body["sessionDescription"]["type"] == "answer"
        )
        await pc.setRemoteDescription(RTCSessionDescription(body["sessionDescription"]["sdp"], "answer"))
        await until(lambda: pc.connectionState == "connected", "the session to connect")
        assert (await report(http, body["sessionId"]))["connectionState"] == "connected"
    finally:
        await pc.close()


async def test_shutdown_closes_every_peer_connection() -> None:
    with running_sfu() as server:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10.0) as http:
            session = (await http.post(f"{API}/sessions/new")).json()["sessionId"]
            client = Client(http, session)
            try:
                await client.publish("user-mic", ToneTrack(440))
                await until(lambda: client.state == "connected", "the publisher to connect")
                await asyncio.to_thread(server.stop)
                await until(lambda: client.state == "closed", "the SFU's shutdown to reach the peer")
                sfu = server.app.state.sfu
                assert [s.finished for s in sfu.sessions()] == [True]
            finally:
                await client.aclose()


# -- the command ---------------------------------------------------------------------------------------


def test_the_command_says_it_is_not_for_production(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sfu", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "not an SFU for production" in text
    assert "--port" in text and "8788" in text


def test_the_secret_comes_from_the_environment_or_is_made_once(tmp_path: Path) -> None:
    err = io.StringIO()
    assert resolve_credentials(None, {APP_SECRET_VAR: "s3"}, err) == ("parley-local", "s3")
    (tmp_path / APP_SECRET_VAR).write_text("from-file\n")
    env = {"PARLEY_SECRETS_DIR": str(tmp_path), "CLOUDFLARE_REALTIME_APP_ID": "env-app"}
    assert resolve_credentials(None, env, err) == ("env-app", "from-file")
    assert resolve_credentials("flag-app", env, err)[0] == "flag-app"
    assert err.getvalue() == ""
    app_id, secret = resolve_credentials(None, {}, err)
    assert app_id == "parley-local" and len(secret) >= 24
    assert err.getvalue().count(secret) == 1 and f"export {APP_SECRET_VAR}={secret}" in err.getvalue()
