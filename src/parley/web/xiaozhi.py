"""XiaoZhi devices: `POST /xiaozhi/ota/`, `POST /xiaozhi/ota/activate`, WebSocket `/xiaozhi/v1/`.

Devices carry no user credentials: the Authenticate middleware lets these paths through, and
the device token (xiaozhi/devices.py) is checked here before the WebSocket upgrade. Each path
answers with and without its trailing slash (firmware and clients differ).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketState

from parley.config import Settings
from parley.errors import (
    Busy,
    ConfigError,
    InvalidInput,
    ParleyError,
    PayloadTooLarge,
    ProviderNotConfigured,
)
from parley.services import Services
from parley.sessions.events import Event
from parley.sessions.keys import SessionKey, session_key
from parley.store.devices import Device, DeviceStore
from parley.store.users import User
from parley.voice.pipeline import VoiceCall, new_call_id
from parley.web.body import parse_json
from parley.web.errors import error_response
from parley.web.users import live_session_of, spend_as
from parley.xiaozhi import protocol
from parley.xiaozhi.connection import CLOSE_NORMAL, Channel, DeviceConnection
from parley.xiaozhi.devices import Devices, check_client_id, check_device_id
from parley.xiaozhi.firmware import board_of, firmware_file, newer_firmware
from parley.xiaozhi.mqtt import INSTALL_HINT, Broker, MqttChannel, MqttGateway
from parley.xiaozhi.ota import WS_PATH, firmware_version, mqtt_block, mqtt_endpoint, ota_answer, websocket_url
from parley.xiaozhi.typed import TypedTurns

router = APIRouter(tags=["xiaozhi"])
log = logging.getLogger("parley.xiaozhi")

#: the largest OTA body (a device's system info is ~1-2 kB)
MAX_OTA_BYTES = 64 * 1024


def devices_of(request: HTTPConnection) -> Devices:
    return _devices(request.app.state.services)


def _devices(svc: Services) -> Devices:
    store = svc.store
    if not isinstance(store, DeviceStore):
        raise ConfigError("XiaoZhi devices need a store that keeps devices", field="PARLEY_DATABASE_URL")
    return Devices(store, open_mode=svc.settings.auth == "none")


def live_devices(request: HTTPConnection) -> dict[str, DeviceConnection]:
    """The open device sockets of this app, by device id (one per device: a newer one wins)."""
    return _live(request.app)


def _live(app: Starlette) -> dict[str, DeviceConnection]:
    state = app.state
    if not hasattr(state, "xiaozhi_devices"):
        state.xiaozhi_devices = {}
    live: dict[str, DeviceConnection] = state.xiaozhi_devices
    return live


def _ids(request: Request | WebSocket) -> tuple[str, str]:
    query = request.query_params
    device = request.headers.get("device-id") or query.get("device-id")
    client = request.headers.get("client-id") or query.get("client-id")
    return check_device_id(device), check_client_id(client)


async def _system_info(request: Request) -> dict[str, Any]:
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_OTA_BYTES:
            raise PayloadTooLarge(
                f"body is larger than {MAX_OTA_BYTES} bytes", field="body", limit=MAX_OTA_BYTES
            )
    if not body.strip():
        return {}
    data = parse_json(body, what="body")
    if not isinstance(data, dict):
        raise InvalidInput("body must be the device's system info, a JSON object", field="body")
    return data


@router.post("/xiaozhi/ota/", include_in_schema=False)
@router.post("/xiaozhi/ota", include_in_schema=False)
async def ota(request: Request) -> JSONResponse:
    """Where the device connects, with its token; or its activation code when it must be bound."""
    try:
        device_id, client_id = _ids(request)
        info = await _system_info(request)
        firmware = firmware_version(info)
        registration = await devices_of(request).register(device_id, client_id, firmware)
        svc: Services = request.app.state.services
        host = request.headers.get("host", "")
        url = websocket_url(svc.settings.public_url, request.url.scheme, host)
        newer = newer_firmware(firmware_dir(svc), board_of(info), firmware)
        mqtt = _mqtt_block(svc.settings, registration.token, host)
    except ParleyError as exc:
        return error_response(exc)
    update = None
    if newer is not None:
        base = url.replace("ws", "http", 1).removesuffix(WS_PATH)
        update = (f"{base}/xiaozhi/ota/download/{newer[0]}", newer[1])
    return JSONResponse(ota_answer(registration, url, firmware, update=update, mqtt=mqtt))


def _mqtt_block(settings: Settings, token: str | None, host: str) -> dict[str, Any] | None:
    if not settings.mqtt_url or not token:
        return None
    password = settings.mqtt_device_password
    endpoint = mqtt_endpoint(
        settings.mqtt_endpoint, settings.public_url, host, Broker.from_url(settings.mqtt_url).port
    )
    return mqtt_block(
        token,
        endpoint=endpoint,
        prefix=settings.mqtt_topic_prefix,
        username=settings.mqtt_device_username,
        password=password.get_secret_value() if password is not None else None,
    )


def firmware_dir(svc: Services) -> Path:
    return svc.settings.data_dir / "firmware"


@router.get("/xiaozhi/ota/download/{name}", include_in_schema=False)
async def download(request: Request, name: str) -> Response:
    """A firmware image the operator placed (no credentials: devices fetch it before they have any)."""
    try:
        path = firmware_file(firmware_dir(request.app.state.services), name)
    except ParleyError as exc:
        return error_response(exc)
    return FileResponse(path, media_type="application/octet-stream")


@router.post("/xiaozhi/ota/activate", include_in_schema=False)
@router.post("/xiaozhi/ota/activate/", include_in_schema=False)
async def activate(request: Request) -> JSONResponse:
    """The device's poll while it shows its code: 202 until a user has bound it, then 200."""
    try:
        device_id, client_id = _ids(request)
        await _system_info(request)  # {algorithm, serial_number, challenge, hmac}: nothing to verify yet
        bound = await devices_of(request).activated(device_id, client_id)
    except ParleyError as exc:
        return error_response(exc)
    if not bound:
        return JSONResponse(
            {"status": "pending", "message": "waiting for the code to be entered"}, status_code=202
        )
    return JSONResponse({"status": "activated"})


def _token(websocket: WebSocket) -> str | None:
    value = websocket.headers.get("authorization") or websocket.query_params.get("authorization")
    if value is None:
        return None
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else value.strip()


@router.websocket("/xiaozhi/v1/")
@router.websocket("/xiaozhi/v1")
async def device_socket(websocket: WebSocket) -> None:
    try:
        version = protocol.check_version(
            websocket.headers.get("protocol-version") or websocket.query_params.get("protocol-version")
        )
        device_hint = websocket.headers.get("device-id") or websocket.query_params.get("device-id")
        device, user = await devices_of(websocket).authenticate(_token(websocket), device_hint)
        websocket.state.user = user  # for the access log
        key = await admit(websocket.app, device, user)
    except ParleyError as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept()
    await serve_device(websocket.app, device, user, key, SocketChannel(websocket), version=version)


async def admit(app: Starlette, device: Device, user: User) -> SessionKey:
    """What a device's session needs before it opens, on any transport: a VAD, room under
    PARLEY_MAX_CALLS, the user's `calls` rate, and its conversation owned here and live."""
    svc: Services = app.state.services
    if svc.calls.vad is None:
        raise ProviderNotConfigured(
            "XiaoZhi devices need voice activity detection (PARLEY_VAD)", field="PARLEY_VAD"
        )
    live = _live(app)
    if device.device_id not in live and len(live) >= svc.settings.max_calls:
        raise Busy(f"too many devices at once (limit {svc.settings.max_calls})", limit=svc.settings.max_calls)
    await spend_as(svc, user, "calls")
    key = session_key(user.id, device_session_id(device))
    await svc.directory.own(key)  # the device's turns run here, beside its audio
    await live_session_of(svc, key)
    return key


async def serve_device(
    app: Starlette, device: Device, user: User, key: SessionKey, channel: Channel, *, version: int
) -> None:
    """Run an admitted device's session on `channel` to its end; a newer one of the device
    replaces it."""
    svc: Services = app.state.services
    live = _live(app)
    sub = svc.bus.subscribe(key)
    voice = svc.calls.config.voice.tts_voice
    connection = DeviceConnection(
        channel,
        _call_maker(svc, key),
        version=version,
        device_id=device.device_id,
        typed=lambda call: TypedTurns(sub, call, svc.tts, voice=voice),
        sessions=svc.sessions,
    )
    earlier = live.get(device.device_id)
    live[device.device_id] = connection
    if earlier is not None:  # the device reconnected (a reboot): its old session is dead or dying
        await earlier.channel.close(CLOSE_NORMAL, "replaced by a newer connection")
    log.info(
        "xiaozhi device=%s user=%s connected transport=%s protocol=%d",
        device.device_id,
        user.name,
        channel.transport,
        version,
    )
    svc.directory.pin(key)
    try:
        await connection.run()
    finally:
        svc.directory.unpin(key)
        svc.bus.unsubscribe(sub)
        if live.get(device.device_id) is connection:
            del live[device.device_id]


# -- MQTT + UDP ---------------------------------------------------------------------------------


async def start_mqtt(app: Starlette, settings: Settings) -> MqttGateway:
    """The MQTT + UDP transport (PARLEY_MQTT_URL): the UDP socket bound and the broker's first
    answer awaited (a broker that is down is retried in the background). Close it with aclose()."""
    assert settings.mqtt_url
    broker = Broker.from_url(settings.mqtt_url)
    try:
        import aiomqtt  # noqa: F401  (the gateway's, checked before anything opens)

        from parley.xiaozhi.udp import UdpEndpoint
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT, field="PARLEY_MQTT_URL") from exc
    udp_host = settings.udp_host or _host_of(settings.mqtt_endpoint) or _host_of(settings.public_url)
    if not udp_host:
        raise ConfigError(
            "the MQTT + UDP transport needs the address devices send audio to: set PARLEY_UDP_HOST "
            "(or PARLEY_MQTT_ENDPOINT or PARLEY_PUBLIC_URL)",
            field="PARLEY_UDP_HOST",
        )
    try:
        udp = await UdpEndpoint.bind(settings.udp_bind, settings.udp_port, announced_host=udp_host)
    except OSError as exc:
        raise ConfigError(
            f"cannot bind UDP {settings.udp_bind}:{settings.udp_port} ({exc.strerror})",
            field="PARLEY_UDP_PORT",
        ) from exc

    async def open_session(digest: str, channel: MqttChannel) -> None:
        device, user = await _devices(app.state.services).by_digest(digest, field="topic")
        key = await admit(app, device, user)
        # version 1: what the UDP session hands over is a bare Opus packet, and takes one
        await serve_device(app, device, user, key, channel, version=1)

    gateway = MqttGateway(broker, udp, open_session, prefix=settings.mqtt_topic_prefix)
    gateway.start()
    app.state.xiaozhi_mqtt = gateway
    await gateway.attempted.wait()
    log.info("xiaozhi mqtt broker=%s:%d udp=%s:%d", broker.host, broker.port, udp_host, udp.port)
    return gateway


def _host_of(url: str | None) -> str | None:
    if not url:
        return None
    return urlsplit(url if "//" in url else f"//{url}").hostname


def device_session_id(device: Device) -> str:
    """The conversation a device's talk goes to: one per device, in its user's history."""
    return "xiaozhi-" + device.device_id.replace(":", "")


def _call_maker(svc: Services, key: SessionKey) -> Callable[[Callable[[Event], None]], VoiceCall]:
    def make(on_event: Callable[[Event], None]) -> VoiceCall:
        vad = svc.calls.vad
        assert vad is not None
        return VoiceCall(
            key,
            sessions=svc.sessions,
            model=vad.fresh(),
            stt=svc.stt,
            tts=svc.tts,
            config=svc.calls.config.voice,
            on_event=on_event,
            call_id=new_call_id(),
        )

    return make


async def _deny(websocket: WebSocket, exc: ParleyError) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(exc))
    else:
        await websocket.close(1008, exc.message[:120])


class SocketChannel:
    """A Starlette WebSocket as a device session's channel."""

    transport = "websocket"

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    def hello_fields(self, hello: protocol.Hello) -> dict[str, Any]:
        return {}

    async def receive(self) -> str | bytes | None:
        if self.websocket.client_state is not WebSocketState.CONNECTED:
            return None
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def send_text(self, text: str) -> None:
        await self.websocket.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.websocket.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code, reason)
