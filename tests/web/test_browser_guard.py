"""Host and Origin checks against a real server: foreign pages and rebound names change nothing."""

from __future__ import annotations

import asyncio
import io
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from pydantic import ValidationError
from websockets.exceptions import InvalidStatus

from parley.config import Settings
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT
from tests.conftest import ServerFactory, make_settings
from tests.web.test_ws import SID, recv, ws_url

EVIL = "http://evil.example"


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 1600)
    return out.getvalue()


async def post_all(client: httpx.AsyncClient, origin: str | None) -> list[httpx.Response]:
    headers = {"Origin": origin} if origin else {}
    chat = await client.post("/api/chat", json={"message": "hi", "sessionId": SID}, headers=headers)
    # multipart: a CORS-safelisted request, which any page may send without a preflight
    transcribe = await client.post(
        "/api/transcribe",
        files={"audio": ("a.wav", wav(), "audio/wav")},
        data={"sessionId": SID},
        headers=headers,
    )
    return [chat, transcribe]


@pytest.mark.parametrize("origin", [EVIL, "http://localhost:3000", "null", "http://127.0.0.1"])
async def test_a_foreign_origin_is_refused_and_nothing_is_stored(serve: ServerFactory, origin: str) -> None:
    chat, stt = EchoChat(), FixedLatencySTT(delay=0)
    server = serve(chat=chat, stt=stt)
    async with httpx.AsyncClient(base_url=server.url) as client:
        for response in await post_all(client, origin):
            assert response.status_code == 403, response.text
            assert response.json()["field"] == "Origin"
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(ws_url(server.url), origin=origin):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        assert (await client.get("/api/history", params={"sessionId": SID})).json()["messages"] == []
    assert chat.requests == [] and stt.calls == []


async def test_same_origin_no_origin_and_configured_origins_work(
    serve: ServerFactory, tmp_path: Path
) -> None:
    stt = FixedLatencySTT(delay=0)
    settings = make_settings(tmp_path / "d", cors_origins=["https://app.example"])
    server = serve(chat=EchoChat(), stt=stt, settings=settings)
    async with httpx.AsyncClient(base_url=server.url) as client:
        for origin in (server.url, "https://app.example", None):
            for response in await post_all(client, origin):
                assert response.status_code == 200, (origin, response.text)
            async with websockets.connect(ws_url(server.url), origin=origin) as ws:  # type: ignore[arg-type]
                assert (await recv(ws))["type"] == "connected"
        history = (await client.get("/api/history", params={"sessionId": SID})).json()["messages"]
        assert len(history) == 6 and len(stt.calls) == 3
        # A page on another origin reads answers only when configured; localhost ports are no exception.
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        ok = await client.options("/api/chat", headers={"Origin": "https://app.example", **preflight})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        local = await client.options("/api/chat", headers={"Origin": "http://localhost:3000", **preflight})
        assert "access-control-allow-origin" not in local.headers


async def test_a_foreign_host_is_refused(serve: ServerFactory, tmp_path: Path) -> None:
    chat = EchoChat()
    server = serve(chat=chat)
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/", "/healthz"):
            r = await client.get(path, headers={"Host": f"evil.example:{server.port}"})
            assert r.status_code == 400 and r.json()["field"] == "Host", r.text
            assert "evil.example" in r.json()["error"]
        r = await client.post(
            "/api/chat", json={"message": "hi", "sessionId": SID}, headers={"Host": "evil.example"}
        )
        assert r.status_code == 400 and r.json()["field"] == "Host"
        for host in (f"localhost:{server.port}", f"[::1]:{server.port}", f"127.0.0.1:{server.port}"):
            assert (await client.get("/healthz", headers={"Host": host})).status_code == 200, host
    # A rebound name reaches the socket too. The handshake is written by hand: client libraries
    # set Host from the URL and will not send another.
    assert await handshake_status(server.port, "evil.example") == 400
    assert await handshake_status(server.port, f"127.0.0.1:{server.port}") == 101
    assert chat.requests == []


async def handshake_status(port: int, host: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                f"GET /ws?sessionId={SID} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()


async def test_the_listen_address_and_configured_hosts_are_allowed(
    serve: ServerFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "d", host="192.0.2.7", allowed_hosts="chat.example, other.example")
    server = serve(chat=EchoChat(), settings=settings)
    async with httpx.AsyncClient(base_url=server.url) as client:
        for host in ("192.0.2.7:8787", "chat.example", "Other.Example."):
            assert (await client.get("/healthz", headers={"Host": host})).status_code == 200, host
        # the configured list replaces the loopback names
        assert (await client.get("/healthz", headers={"Host": "localhost"})).status_code == 400


def test_a_wildcard_listen_address_adds_no_host() -> None:
    from parley.web.origins import allowed_hosts

    assert allowed_hosts(make_settings(Path("d"), host="0.0.0.0")) == {"localhost", "127.0.0.1", "::1"}


@pytest.mark.parametrize("value", ["http://chat.example", "chat.example:8787", "a b"])
def test_a_bad_allowed_host_names_the_setting(value: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("PARLEY_ALLOWED_HOSTS", f"localhost,{value}")
    with pytest.raises(ValidationError) as bad:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "allowed_hosts" in str(bad.value) and value in str(bad.value)
