"""The OTA answer: where a device's WebSocket is, its token, its firmware, and activation.

A device POSTs its system info to `/xiaozhi/ota/` at every boot and connects where the answer
says. The URL is the one devices can reach: PARLEY_PUBLIC_URL when set (behind a proxy or a
tunnel the request's own Host is not what a device on the LAN dials), else the request's.
With MQTT configured the answer also has the `mqtt` block, which the firmware prefers to
`websocket` when both are there (clients that speak only the WebSocket find theirs).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from parley.auth import credentials
from parley.errors import ConfigError
from parley.xiaozhi.devices import Registration
from parley.xiaozhi.mqtt import topics

WS_PATH = "/xiaozhi/v1/"
#: how long a device shows its code and polls /activate before asking again
ACTIVATION_TIMEOUT_MS = 300_000


def websocket_url(public_url: str | None, scheme: str, host: str) -> str:
    """`ws(s)://<host>/xiaozhi/v1/` from PARLEY_PUBLIC_URL, else from the request's scheme and Host."""
    if public_url:
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
            raise ConfigError(
                f"PARLEY_PUBLIC_URL must be an http(s) URL like https://parley.example.com, not {public_url!r}",
                field="PARLEY_PUBLIC_URL",
            )
        secure = parts.scheme in ("https", "wss")
        base = parts.path.rstrip("/")
        return f"{'wss' if secure else 'ws'}://{parts.netloc}{base}{WS_PATH}"
    return f"{'wss' if scheme in ('https', 'wss') else 'ws'}://{host}{WS_PATH}"


def mqtt_endpoint(configured: str | None, public_url: str | None, host: str, broker_port: int) -> str:
    """`host:port` of the broker for devices: PARLEY_MQTT_ENDPOINT, else the host devices reach
    Parley at (PARLEY_PUBLIC_URL's, else the request's Host) with the broker's port."""
    if configured:
        return configured
    name = urlsplit(public_url).hostname if public_url else None
    if not name:
        name = urlsplit(f"//{host}").hostname or host
    return f"[{name}]:{broker_port}" if ":" in name else f"{name}:{broker_port}"


def mqtt_block(
    token: str, *, endpoint: str, prefix: str, username: str | None, password: str | None
) -> dict[str, Any]:
    """The device's broker, account and topics. Its key (client id and topic names) is the digest
    of its token: Parley finds the device from the topic, and it changes with the token."""
    key = credentials.digest(token)
    publish, subscribe = topics(prefix, key)
    return {
        "endpoint": endpoint,
        "client_id": key,
        "username": username or "",
        "password": password or "",
        "publish_topic": publish,
        "subscribe_topic": subscribe,
    }


def firmware_version(info: Any) -> str | None:
    """The version the device reports (`application.version` of its system info), if any."""
    app = info.get("application") if isinstance(info, dict) else None
    version = app.get("version") if isinstance(app, dict) else None
    return version[:64] if isinstance(version, str) and version else None


def ota_answer(
    registration: Registration,
    ws_url: str,
    firmware: str | None,
    *,
    update: tuple[str, str] | None = None,
    mqtt: dict[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The reply body. `update` is (download URL, version) of a newer firmware image. A device that
    must be activated also gets `activation` and an empty token (a client that needs the field
    finds it; nothing can connect with it). `mqtt` is the device's block (`mqtt_block`), given only
    to a bound device."""
    ts = time.time() if now is None else now
    offset = -time.altzone if time.daylight and time.localtime(ts).tm_isdst else -time.timezone
    body: dict[str, Any] = {
        "server_time": {"timestamp": int(ts * 1000), "timezone_offset": offset // 60},
        # the device's own version (and no URL) means "nothing to update"
        "firmware": (
            {"version": update[1], "url": update[0]}
            if update
            else {"version": firmware or "0.0.0", "url": ""}
        ),
        "websocket": {"url": ws_url, "token": registration.token or ""},
    }
    if mqtt is not None and registration.token:
        body["mqtt"] = mqtt
    if registration.code is not None:
        code = registration.code
        body["activation"] = {
            "code": code,
            "message": f"Parley: {code}",
            "challenge": registration.device.device_id,
            "timeout_ms": ACTIVATION_TIMEOUT_MS,
        }
    return body
