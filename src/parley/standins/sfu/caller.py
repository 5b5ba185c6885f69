"""SFUCaller: a browser's side of a Cloudflare-mode call, in Python (aiortc), for tests and benchmarks.

It speaks to Parley's /api/sfu endpoints exactly as `static/sfu.js` does (one attempt, no
recovery loop): publish the mic from its own SFU session, start the call, pull the assistant's
voice, and re-pull it when told the voice moved. It is also what a headless client of Parley's
Cloudflare mode (a device, a bot) would do.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from parley.rtc.sfu_peer import first_bytes

MIC_TRACK = "user-mic"


class CallerError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class SFUCaller:
    def __init__(
        self, parley_url: str, session_id: str, mic: MediaStreamTrack, *, timeout: float = 15.0
    ) -> None:
        self.session_id = session_id
        self.http = httpx.AsyncClient(base_url=parley_url, timeout=timeout)
        self.pc = RTCPeerConnection()
        self.mic = mic
        self.sfu_session_id: str | None = None
        self.token: str | None = None
        self.call_id: str | None = None
        self.call_token: str | None = None
        self.voice: tuple[str, str] | None = None
        self.pulled_mid: str | None = None
        self.voice_tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
        self.pc.on("track", self.voice_tracks.put_nowait)
        self._connected = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self._connected.set()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        ok: bool = True,
    ) -> httpx.Response:
        response = await self.http.request(method, path, json=body, headers=headers)
        if ok and response.status_code >= 400:
            raise CallerError(response.status_code, response.text)
        return response

    def session_path(self, action: str = "") -> str:
        return f"/api/sfu/sessions/{self.sfu_session_id}" + (f"/{action}" if action else "")

    @property
    def auth(self) -> dict[str, str]:
        return {"X-Parley-Token": self.token or ""}

    async def publish(self) -> None:
        """Open an SFU session and publish the mic; returns when its first packets went out."""
        transceiver = self.pc.addTransceiver(self.mic, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        session = (await self.request("POST", "/api/sfu/sessions/new")).json()
        self.sfu_session_id, self.token = session["sessionId"], session["token"]
        reply = (
            await self.request(
                "POST",
                self.session_path("tracks/new"),
                {
                    "sessionDescription": {"type": "offer", "sdp": self.pc.localDescription.sdp},
                    "tracks": [{"location": "local", "mid": transceiver.mid, "trackName": MIC_TRACK}],
                },
                headers=self.auth,
            )
        ).json()
        failed = [t for t in reply["tracks"] if t.get("errorCode")]
        if failed:
            raise CallerError(200, failed)
        await self.pc.setRemoteDescription(
            RTCSessionDescription(reply["sessionDescription"]["sdp"], "answer")
        )
        await asyncio.wait_for(self._connected.wait(), 10.0)
        await asyncio.wait_for(first_bytes(transceiver.sender), 10.0)

    async def start_call(self) -> dict[str, Any]:
        body = (
            await self.request(
                "POST",
                "/api/sfu/calls",
                {"sessionId": self.session_id, "sfuSessionId": self.sfu_session_id, "trackName": MIC_TRACK},
                headers=self.auth,
            )
        ).json()
        self.call_id, self.call_token = body["callId"], body["callToken"]
        self.voice = (body["sfuSessionId"], body["trackName"])
        return dict(body)

    async def pull_voice(self) -> None:
        assert self.voice is not None
        if self.pulled_mid is not None:
            await self.request(
                "PUT",
                self.session_path("tracks/close"),
                {"tracks": [{"mid": self.pulled_mid}], "force": True},
                headers=self.auth,
            )
        sid, name = self.voice
        reply = (
            await self.request(
                "POST",
                self.session_path("tracks/new"),
                {"tracks": [{"location": "remote", "sessionId": sid, "trackName": name}]},
                headers=self.auth,
            )
        ).json()
        failed = [t for t in reply["tracks"] if t.get("errorCode")]
        if failed:
            raise CallerError(200, failed)
        await self.pc.setRemoteDescription(RTCSessionDescription(reply["sessionDescription"]["sdp"], "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.request(
            "PUT",
            self.session_path("renegotiate"),
            {"sessionDescription": {"type": "answer", "sdp": self.pc.localDescription.sdp}},
            headers=self.auth,
        )
        self.pulled_mid = reply["tracks"][0].get("mid")

    async def connect(self) -> None:
        """The whole start: publish, start the call, pull the voice."""
        await self.publish()
        await self.start_call()
        await self.pull_voice()

    async def voice_moved(self, sfu_session_id: str, track_name: str) -> None:
        self.voice = (sfu_session_id, track_name)
        await self.pull_voice()

    async def hangup(self) -> None:
        if self.call_id is not None:
            await self.request("POST", "/api/hangup", {"callId": self.call_id}, ok=False)

    async def aclose(self) -> None:
        await self.pc.close()
        self.mic.stop()
        await self.http.aclose()
