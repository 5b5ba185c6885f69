"""Cloudflare TURN credentials: the client against the Realtime stand-in, and GET /api/ice through Parley.

Everything runs on real uvicorn servers on 127.0.0.1: the stand-in answers with the documented
shapes, and Parley is started with a distinctive TURN token so a leak anywhere is found by search.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.errors import ProviderNotConfigured, ProviderTimeout, ProviderUnavailable
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.rtc.ice import IceServer, parse_ice_servers
from parley.rtc.registry import CallConfig, CallRegistry
from parley.rtc.turn import KEY_VAR, TOKEN_VAR, CloudflareTURN
from parley.standins import realtime
from parley.standins.server import BackgroundServer
from parley.web.static import STATIC_DIR
from tests.conftest import ServerFactory, make_settings

KEY_ID = "turnkey-id-7f3a9c"
TOKEN = "TURN-TOKEN-zq81-do-not-leak"
PORT_53 = re.compile(r":53(\?|$)")
STATIC = [{"urls": "stun:stun.example.org:3478"}]


@pytest.fixture
def turn_api() -> Iterator[BackgroundServer]:
    with BackgroundServer(realtime.create_app(turn_key_id=KEY_ID, turn_token=TOKEN)) as server:
        yield server


def client(server: BackgroundServer, **kwargs: object) -> CloudflareTURN:
    options: dict[str, object] = {"key_id": KEY_ID, "api_token": TOKEN, "base_url": server.url + "/v1"}
    options.update(kwargs)
    return CloudflareTURN(**options)  # type: ignore[arg-type]


def all_urls(servers: tuple[IceServer, ...]) -> list[str]:
    return [u for s in servers for u in s.urls]


async def test_credentials_are_fresh_per_call_with_the_asked_ttl(turn_api: BackgroundServer) -> None:
    turn = client(turn_api, ttl_seconds=300)
    try:
        first = await turn.ice_servers()
        second = await turn.ice_servers()
        custom = await turn.ice_servers(ttl_seconds=120)
    finally:
        await turn.aclose()
    assert [r["ttl"] for r in turn_api.app.state.requests] == [300, 300, 120]
    assert not any(TOKEN in str(r) for r in turn_api.app.state.requests)
    issued = turn_api.app.state.issued
    assert len(issued) == 3
    assert len({s[1].username for s in (first, second, custom)}) == 3  # never reused
    stun, relay = first
    assert stun == IceServer(("stun:stun.cloudflare.com:3478",))
    assert relay.username in issued and relay.credential == issued[relay.username]["credential"]
    # port 53 dropped (browsers block it); UDP first, then TCP, then TLS: aiortc takes the first TURN URL
    assert relay.urls == (
        "turn:turn.cloudflare.com:3478?transport=udp",
        "turn:turn.cloudflare.com:3478?transport=tcp",
        "turn:turn.cloudflare.com:80?transport=tcp",
        "turns:turn.cloudflare.com:5349?transport=tcp",
        "turns:turn.cloudflare.com:443?transport=tcp",
    )
    assert not any(PORT_53.search(u) for u in all_urls(first))


async def test_the_older_generate_endpoint_is_used_when_the_new_one_is_missing() -> None:
    app = realtime.create_app(turn_key_id=KEY_ID, turn_token=TOKEN, legacy_only=True)
    with BackgroundServer(app) as server:
        turn = client(server)
        try:
            servers = await turn.ice_servers()
        finally:
            await turn.aclose()
    paths = [r["path"].rsplit("/", 1)[1] for r in app.state.requests]
    assert paths == ["generate-ice-servers", "generate"]
    (relay,) = servers  # the older endpoint has no STUN entry, and one object instead of a list
    assert relay.urls[0] == "turn:turn.cloudflare.com:3478?transport=udp" and relay.username


async def test_revoke_ends_credentials_early(turn_api: BackgroundServer) -> None:
    turn = client(turn_api)
    try:
        username = (await turn.ice_servers())[1].username
        assert username is not None
        await turn.revoke(username)
    finally:
        await turn.aclose()
    assert turn_api.app.state.issued[username]["revoked"] is True


async def test_a_rejected_token_or_unknown_key_names_the_variable(turn_api: BackgroundServer) -> None:
    bad = client(turn_api, api_token="wrong-token-1234")
    unknown = client(turn_api, key_id="no-such-key")
    missing = CloudflareTURN(key_id=KEY_ID, api_token=None, base_url=turn_api.url + "/v1")
    try:
        with pytest.raises(ProviderNotConfigured) as rejected:
            await bad.ice_servers()
        with pytest.raises(ProviderNotConfigured) as not_found:
            await unknown.ice_servers()
        with pytest.raises(ProviderNotConfigured) as unset:
            await missing.ice_servers()
    finally:
        for turn in (bad, unknown, missing):
            await turn.aclose()
    assert rejected.value.field == TOKEN_VAR and TOKEN_VAR in rejected.value.message
    assert "wrong-token-1234" not in str(rejected.value.to_dict())
    assert "wrong-token-1234" not in repr(bad._http.headers)
    assert not_found.value.field == KEY_VAR
    assert unset.value.field == TOKEN_VAR
    assert len(turn_api.app.state.requests) == 1 + 2  # 401 once; 404 on both endpoints; none unset


async def test_a_slow_or_unreachable_turn_api_is_a_timeout_or_unavailable() -> None:
    with BackgroundServer(realtime.create_app(turn_key_id=KEY_ID, turn_token=TOKEN, delay=2.0)) as slow:
        turn = client(slow, timeout=0.2)
        try:
            with pytest.raises(ProviderTimeout):
                await turn.ice_servers()
        finally:
            await turn.aclose()
    down = CloudflareTURN(key_id=KEY_ID, api_token=TOKEN, base_url="http://127.0.0.1:9/v1")
    try:
        with pytest.raises(ProviderUnavailable) as unreachable:
            await down.ice_servers()
    finally:
        await down.aclose()
    assert TOKEN not in str(unreachable.value.to_dict())


async def test_the_calls_registry_gives_each_call_static_plus_fresh_turn_servers(
    turn_api: BackgroundServer,
) -> None:
    calls = CallRegistry(
        sessions=None,  # type: ignore[arg-type]
        vad=None,
        stt=FixedLatencySTT(),
        tts=FixedLatencyTTS(),
        config=CallConfig(ice_servers=parse_ice_servers(STATIC)),
        turn=client(turn_api),
    )
    try:
        one, two = await calls.ice_for_call(), await calls.ice_for_call()
    finally:
        await calls.aclose()
    # the configured servers first, as the operator ordered them; then Cloudflare's
    assert one.servers[0].urls == ("stun:stun.example.org:3478",) and one.warning is None
    assert one.servers[2].username != two.servers[2].username


# -- through Parley ------------------------------------------------------------------------------


def parley(serve: ServerFactory, tmp_path: Path, base_url: str) -> BackgroundServer:
    settings = make_settings(
        tmp_path / "data",
        ice_servers=STATIC,
        cloudflare_turn_key_id=KEY_ID,
        cloudflare_turn_key_api_token=TOKEN,
        turn_ttl_seconds=900,
        realtime_base_url=base_url,
    )
    return serve(settings=settings)


async def test_api_ice_serves_fresh_credentials_and_is_never_cached(
    serve: ServerFactory, tmp_path: Path, turn_api: BackgroundServer
) -> None:
    server = parley(serve, tmp_path, turn_api.url + "/v1")
    async with httpx.AsyncClient(base_url=server.url) as http:
        first, second = await http.get("/api/ice"), await http.get("/api/ice")
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    body = first.json()
    assert "warning" not in body
    stun, cloudflare_stun, relay = body["iceServers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    assert cloudflare_stun == {"urls": ["stun:stun.cloudflare.com:3478"]}
    assert relay["urls"][0] == "turn:turn.cloudflare.com:3478?transport=udp"
    assert not any(PORT_53.search(u) for s in body["iceServers"] for u in s["urls"])
    assert relay["username"] != second.json()["iceServers"][2]["username"]
    assert [r["ttl"] for r in turn_api.app.state.requests] == [900, 900]


async def test_api_ice_falls_back_to_the_static_list_with_a_warning_when_turn_is_down(
    serve: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="parley")
    server = parley(serve, tmp_path, "http://127.0.0.1:9/v1")  # nothing listens on port 9
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/api/ice")
    assert r.status_code == 200
    body = r.json()
    assert body["iceServers"] == [{"urls": ["stun:stun.example.org:3478"]}]
    assert "Cannot reach the Cloudflare TURN API" in body["warning"]
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert any("no Cloudflare TURN servers" in w for w in warnings)
    assert not any(TOKEN in w for w in warnings)


async def test_api_ice_warns_with_the_variable_to_fix_when_the_token_is_rejected(
    serve: ServerFactory, tmp_path: Path
) -> None:
    app = realtime.create_app(turn_key_id=KEY_ID, turn_token="the-right-one")
    with BackgroundServer(app) as upstream:
        server = parley(serve, tmp_path, upstream.url + "/v1")
        async with httpx.AsyncClient(base_url=server.url) as http:
            body = (await http.get("/api/ice")).json()
    assert body["iceServers"] == [{"urls": ["stun:stun.example.org:3478"]}]
    assert TOKEN_VAR in body["warning"] and TOKEN not in body["warning"]


async def test_the_turn_token_never_leaves_the_server(
    serve: ServerFactory, tmp_path: Path, turn_api: BackgroundServer
) -> None:
    server = parley(serve, tmp_path, turn_api.url + "/v1")
    scripts = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*.js"))
    assert "app.js" in scripts
    paths = ["/", "/api/ice", "/openapi.json", "/healthz", "/metrics", *(f"/static/{s}" for s in scripts)]
    async with httpx.AsyncClient(base_url=server.url) as http:
        responses = [await http.get(path) for path in paths]
    for path, r in zip(paths, responses, strict=True):
        assert r.status_code == 200, path
        seen = r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        assert TOKEN not in seen, path
        # the documented replies never carry the key id either
        assert KEY_ID not in seen, path
    assert len(turn_api.app.state.requests) == 1  # /api/ice really did use the TURN key
