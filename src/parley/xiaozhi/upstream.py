"""The device side of the XiaoZhi protocol: Parley connecting to a remote XiaoZhi server.

    OTA POST (Device-Id, Client-Id) -> {websocket {url, token}} (or `activation`: show the code,
    poll <ota>/activate until bound, ask again) -> WebSocket (Authorization: Bearer, Protocol-Version,
    Device-Id, Client-Id) -> hello with audio_params -> the server's hello (session_id, downlink
    audio_params) -> `listen start` in realtime mode -> Opus both ways, JSON from the server

Protocol version 1 (one bare Opus packet per binary frame) is what every server speaks. The
server's messages are read into the small types at the end (`Said`, `Emotion`, `Speech`,
`Alert`); what the bridge does with them is xiaozhi/bridge.py's. Every failure to reach or keep
the server is a `ProviderUnavailable` naming it; a server that speaks something else is a
`ProviderError`. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from parley import __version__
from parley.config import Settings
from parley.errors import ConfigError, ProviderError, ProviderUnavailable
from parley.xiaozhi import protocol
from parley.xiaozhi.identity import Identities, Identity
from parley.xiaozhi.protocol import FRAME_MS

log = logging.getLogger("parley.xiaozhi")

FIELD = "PARLEY_XIAOZHI_OTA_URL"
PROTOCOL_VERSION = 1
HELLO_SECONDS = 10.0
#: how often the activation poll asks, and how long at most when the server does not say
ACTIVATION_POLL_SECONDS = 3.0
ACTIVATION_SECONDS = 300.0
#: what the bridge sends: 16 kHz mono Opus (xiaozhi/opus.py is not imported here: PyAV loads late)
UPLINK_RATE = 16000


@dataclass(slots=True, frozen=True)
class UpstreamConfig:
    ota_url: str
    #: where the device identities are kept (xiaozhi/identity.py)
    identities: Path
    timeout: float = 10.0
    #: how often the activation poll asks while the code waits to be entered
    activation_poll_seconds: float = ACTIVATION_POLL_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamConfig | None:
        """The remote server of PARLEY_VOICE_BACKEND=xiaozhi (None: Parley answers calls itself)."""
        if settings.voice_backend != "xiaozhi":
            return None
        url = settings.xiaozhi_ota_url
        if not url:
            raise ConfigError(
                f"PARLEY_VOICE_BACKEND=xiaozhi needs {FIELD}, the remote server's OTA URL "
                "(like http://xiaozhi.lan:8003/xiaozhi/ota/)",
                field=FIELD,
            )
        return cls(url, settings.data_dir / "xiaozhi-bridge.json", settings.provider_timeout)


# -- what the server sends ----------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Said:
    """`stt`: what the server heard the user say."""

    text: str


@dataclass(slots=True, frozen=True)
class Emotion:
    """`llm`: the face the device should show (an emoji and its name), not text of the reply."""

    emotion: str


@dataclass(slots=True, frozen=True)
class Speech:
    """`tts`: `start`, `sentence_start` (with the sentence about to be spoken) or `stop`."""

    state: str
    text: str = ""


@dataclass(slots=True, frozen=True)
class Alert:
    message: str


ServerMessage = Said | Emotion | Speech | Alert


def read_message(raw: str) -> ServerMessage | None:
    """A server's JSON message, or None for one the bridge has no use for (mcp, system, hello)."""
    try:
        data = json.loads(raw)
    except ValueError:
        log.info("xiaozhi upstream sent a text frame that is not JSON: %.80r", raw)
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    raw_text = data.get("text")
    text = raw_text if isinstance(raw_text, str) else ""
    if kind == "stt":
        return Said(text.strip())
    if kind == "llm":
        return Emotion(str(data.get("emotion") or ""))
    if kind == "tts" and isinstance(data.get("state"), str):
        return Speech(data["state"], text.strip())
    if kind == "alert":
        return Alert(str(data.get("message") or "alert"))
    return None


# -- OTA and activation -------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Endpoint:
    url: str
    token: str


class Upstream:
    """One remote XiaoZhi server: its OTA URL and the identities calls use with it."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.identities = Identities(config.identities)

    @property
    def name(self) -> str:
        """How errors and logs name the server: its OTA URL without credentials."""
        parts = urlsplit(self.config.ota_url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def unavailable(self, why: str) -> ProviderUnavailable:
        return ProviderUnavailable(f"the XiaoZhi server at {self.name} {why}", field=FIELD)

    async def endpoint(self, identity: Identity, *, on_code: Callable[[str], None]) -> Endpoint:
        """Where to connect and with which token (OTA); an unbound identity is activated first:
        `on_code(code)` is told the code to enter in the server's console, and this waits for it."""
        async with httpx.AsyncClient(timeout=self.config.timeout) as http:
            body = await self._ota(http, identity)
            activation = body.get("activation")
            if isinstance(activation, dict) and activation.get("code"):
                await self._activate(http, identity, activation, on_code)
                body = await self._ota(http, identity)
        ws = body.get("websocket")
        if not isinstance(ws, dict) or not isinstance(ws.get("url"), str):
            offered = "only MQTT" if "mqtt" in body else "no websocket"
            raise ProviderError(
                f"the XiaoZhi server at {self.name} offers {offered} in its OTA answer; the bridge "
                "speaks the WebSocket transport",
                field=FIELD,
            )
        return Endpoint(ws["url"], str(ws.get("token") or ""))

    def _headers(self, identity: Identity) -> dict[str, str]:
        return {
            "Device-Id": identity.device_id,
            "Client-Id": identity.client_id,
            "Activation-Version": "2",
            "User-Agent": f"parley-bridge/{__version__}",
            "Accept-Language": "en-US",
        }

    async def _post(self, http: httpx.AsyncClient, url: str, identity: Identity, body: Any) -> httpx.Response:
        try:
            return await http.post(url, headers=self._headers(identity), json=body)
        except httpx.TimeoutException as exc:
            raise self.unavailable(f"did not answer in {self.config.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise self.unavailable(f"is unreachable ({type(exc).__name__}: {exc})") from exc

    async def _ota(self, http: httpx.AsyncClient, identity: Identity) -> dict[str, Any]:
        info = {
            "application": {"name": "parley-bridge", "version": __version__},
            "board": {"type": "parley-bridge", "name": "parley-bridge"},
            "mac_address": identity.device_id,
            "uuid": identity.client_id,
        }
        answer = await self._post(http, self.config.ota_url, identity, info)
        if answer.status_code != 200:
            raise self.unavailable(f"refused the OTA request ({answer.status_code}: {answer.text[:200]})")
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderError(
                f"the XiaoZhi server at {self.name} answered OTA with no JSON object", field=FIELD
            )
        return body

    async def _activate(
        self,
        http: httpx.AsyncClient,
        identity: Identity,
        activation: dict[str, Any],
        on_code: Callable[[str], None],
    ) -> None:
        code = str(activation["code"])
        challenge = str(activation.get("challenge") or "")
        timeout = activation.get("timeout_ms")
        seconds = timeout / 1000 if isinstance(timeout, int | float) and timeout > 0 else ACTIVATION_SECONDS
        log.warning(
            "xiaozhi bridge: the server at %s wants device %s activated: enter the code %s in its "
            "console (waiting up to %.0f s)",
            self.name,
            identity.device_id,
            code,
            seconds,
        )
        on_code(code)
        body = {
            "algorithm": "hmac-sha256",
            "serial_number": identity.client_id,
            "challenge": challenge,
            "hmac": hmac.new(identity.secret.encode(), challenge.encode(), hashlib.sha256).hexdigest(),
        }
        url = self.config.ota_url.rstrip("/") + "/activate"
        deadline = time.monotonic() + seconds
        while True:
            answer = await self._post(http, url, identity, body)
            if answer.status_code == 200:
                log.info("xiaozhi bridge: device %s activated on %s", identity.device_id, self.name)
                return
            if answer.status_code != 202:
                raise self.unavailable(f"refused the activation ({answer.status_code}: {answer.text[:200]})")
            poll = self.config.activation_poll_seconds
            if time.monotonic() + poll > deadline:
                raise self.unavailable(f"was not told the activation code {code} in time")
            await asyncio.sleep(poll)

    # -- the socket -----------------------------------------------------------------------------

    async def connect(self, identity: Identity, *, on_code: Callable[[str], None]) -> UpstreamSocket:
        """OTA, WebSocket and the hello exchange; the socket is listening (realtime mode) when returned."""
        endpoint = await self.endpoint(identity, on_code=on_code)
        headers = {
            "Protocol-Version": str(PROTOCOL_VERSION),
            "Device-Id": identity.device_id,
            "Client-Id": identity.client_id,
        }
        if endpoint.token:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        try:
            ws = await websockets.connect(
                endpoint.url,
                additional_headers=headers,
                open_timeout=self.config.timeout,
                max_size=protocol.MAX_FRAME_BYTES * 4,
                user_agent_header=f"parley-bridge/{__version__}",
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            raise self.unavailable(f"refused the WebSocket ({type(exc).__name__}: {exc})") from exc
        socket = UpstreamSocket(self, ws)
        try:
            await socket.greet()
        except BaseException:
            await socket.aclose()
            raise
        return socket


class UpstreamSocket:
    """One open session with the server. `receive()` from one task, sends from any."""

    def __init__(self, upstream: Upstream, ws: ClientConnection) -> None:
        self.upstream = upstream
        self.ws = ws
        self.session_id = ""
        #: the downlink's rate, from the server's hello (decoding does not depend on it)
        self.downlink_rate = 24000

    async def greet(self) -> None:
        await self.send_json(
            {
                "type": "hello",
                "version": PROTOCOL_VERSION,
                "transport": "websocket",
                # aec: the browser cancels the echo, so the server may listen while it speaks
                "features": {"mcp": False, "aec": True},
                "audio_params": {
                    "format": "opus",
                    "sample_rate": UPLINK_RATE,
                    "channels": 1,
                    "frame_duration": FRAME_MS,
                },
            }
        )
        try:
            async with asyncio.timeout(HELLO_SECONDS):
                while True:
                    raw = await self.ws.recv()
                    if isinstance(raw, str):
                        data = json.loads(raw)
                        if isinstance(data, dict) and data.get("type") == "hello":
                            break
        except TimeoutError:
            raise self.upstream.unavailable(f"sent no hello within {HELLO_SECONDS:g} s") from None
        except websockets.ConnectionClosed as exc:
            raise self.upstream.unavailable(f"closed the socket before its hello ({_closed(exc)})") from exc
        except ValueError as exc:
            raise ProviderError(
                f"the XiaoZhi server at {self.upstream.name} sent a hello that is not JSON"
            ) from exc
        params = data.get("audio_params")
        if isinstance(params, dict):
            if params.get("format", "opus") != "opus":
                raise ProviderError(
                    f"the XiaoZhi server at {self.upstream.name} sends {params.get('format')!r} audio; "
                    "the bridge speaks Opus",
                    field=FIELD,
                )
            rate = params.get("sample_rate")
            self.downlink_rate = rate if isinstance(rate, int) else self.downlink_rate
        self.session_id = str(data.get("session_id") or "")
        await self.send_json({"type": "listen", "state": "start", "mode": "realtime"})
        log.info(
            "xiaozhi bridge connected to %s session=%s downlink=%d Hz",
            self.upstream.name,
            self.session_id,
            self.downlink_rate,
        )

    async def send_json(self, message: dict[str, Any]) -> None:
        if self.session_id and message.get("type") != "hello":
            message = {"session_id": self.session_id, **message}
        await self._send(protocol.dumps(message))

    async def send_audio(self, packet: bytes) -> None:
        await self._send(protocol.pack(PROTOCOL_VERSION, packet))

    async def _send(self, frame: str | bytes) -> None:
        try:
            await self.ws.send(frame)
        except websockets.ConnectionClosed as exc:
            raise self.upstream.unavailable(f"closed the socket ({_closed(exc)})") from exc

    async def receive(self) -> ServerMessage | bytes | None:
        """The next message worth reading, or the next Opus packet; raises when the socket closes."""
        while True:
            try:
                raw = await self.ws.recv()
            except websockets.ConnectionClosed as exc:
                raise self.upstream.unavailable(f"closed the socket ({_closed(exc)})") from exc
            if isinstance(raw, bytes):
                return protocol.unpack(PROTOCOL_VERSION, raw).payload
            message = read_message(raw)
            if message is not None:
                return message

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2.0)


def _closed(exc: websockets.ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "no close frame"
    return f"code {frame.code}" + (f": {frame.reason}" if frame.reason else "")
