"""One client address cannot exhaust voice for everyone: calls held and signalling rate per address."""

from __future__ import annotations

import json
import secrets
from dataclasses import replace

import httpx
import pytest
import websockets

from parley.config import Settings
from parley.errors import ConfigError, RateLimited
from parley.providers.testing import EchoChat
from parley.web.limits import ClientLimits
from tests.conftest import ServerFactory
from tests.rtc.test_loopback import Client, Server, dial, http_client, server

__all__ = ["server"]  # the fixture, shared with the loopback tests

A, B = ("10.0.0.1", 5000), ("10.0.0.2", 5000)


async def test_one_address_holds_at_most_its_share_of_calls_and_others_still_call(server: Server) -> None:
    server.calls.config = replace(server.calls.config, max_calls_per_client=2)
    opened: list[Client] = []
    async with http_client(server.calls, client=A) as first, http_client(server.calls, client=B) as second:
        try:
            opened += [await dial(first), await dial(first)]
            refused = await first.post("/api/offer", json={"sdp": "v=0", "type": "offer", "sessionId": "x"})
            assert refused.status_code == 429, refused.text
            assert refused.json()["limit"] == 2 and "this address" in refused.json()["error"]
            assert len(server.calls) == 2
            opened.append(await dial(second))  # another address is not locked out
            assert len(server.calls) == 3
            # A hang-up gives the address its room back.
            await first.post("/api/hangup", json={"callId": opened[0].call_id})
            opened.append(await dial(first))
        finally:
            for client in opened:
                await client.close()


async def test_ice_and_offers_are_rate_limited_per_address(server: Server) -> None:
    limits = ClientLimits({"ice": "3/minute", "offer": "3/minute"})
    async with (
        http_client(server.calls, limits=limits, client=A) as first,
        http_client(server.calls, limits=limits, client=B) as second,
    ):
        answers = [await first.get("/api/ice") for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        body = answers[-1].json()
        assert (body["code"], body["field"], body["limit"]) == ("rate_limited", "client", "3 per 1 minute")
        assert (await second.get("/api/ice")).status_code == 200
        offers = [
            await first.post("/api/offer", json={"sdp": "v=0", "type": "offer", "sessionId": "x"})
            for _ in range(4)
        ]
        # the first three reach the registry (and fail on the junk SDP); the fourth never does
        assert [r.status_code for r in offers][-1] == 429
        assert all(r.status_code != 429 for r in offers[:3])
    assert len(server.calls) == 0


def test_a_malformed_rate_is_refused_at_start_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="PARLEY_SIGNALLING_RATE_LIMIT"):
        ClientLimits({"ice": "lots"})


async def test_the_app_reads_both_settings(tmp_path: object) -> None:
    from pathlib import Path

    from parley.app import create_app
    from tests.conftest import make_settings

    assert isinstance(tmp_path, Path)
    settings = make_settings(tmp_path, signalling_rate_limit="1/minute", max_calls_per_client=1)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        assert svc.calls.config.max_calls_per_client == 1
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as http:
            assert (await http.get("/api/ice")).status_code == 200
            assert (await http.get("/api/ice")).status_code == 429


async def test_stop_on_a_session_that_is_not_live_makes_none(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        for i in range(20):
            r = await client.post("/api/stop", json={"sessionId": f"nobody-{i}"})
            assert r.json() == {"stopped": False, "turnId": None}
        health = (await client.get("/healthz")).json()
    assert health["liveSessions"] == 0


async def test_new_live_sessions_per_address_are_rate_limited_and_live_ones_stay_open(
    serve: ServerFactory, settings: Settings
) -> None:
    server = serve(chat=EchoChat(), settings=replace_settings(settings, new_sessions_rate_limit="3/minute"))
    ws_url = server.url.replace("http://", "ws://")
    for i in range(3):
        async with websockets.connect(f"{ws_url}/ws?sessionId=fresh-{i}") as ws:
            assert json.loads(await ws.recv())["type"] == "connected"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{ws_url}/ws?sessionId=fresh-9"):
            pass
    assert refused.value.response.status_code == 429
    # a session that is live already costs nothing more: joining it still works
    async with websockets.connect(f"{ws_url}/ws?sessionId=fresh-0") as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/healthz")).json()["liveSessions"] == 3


def replace_settings(settings: Settings, **values: object) -> Settings:
    return settings.model_copy(update=values)


async def test_the_per_address_rates_are_shared_by_every_process_on_one_redis() -> None:
    """With PARLEY_REDIS_URL two processes count one address together (two limiters on one real
    Redis here, as two nodes behind a balancer would be)."""
    from tests.bus.conftest import REDIS_HOST, REDIS_PORT, REDIS_URL
    from tests.conftest import require_service

    require_service(REDIS_HOST, REDIS_PORT, "Redis, for shared rate limits")
    address = f"198.51.100.{secrets.randbelow(250) + 1}-{secrets.token_hex(4)}"
    first = ClientLimits({"ice": "3/minute"}, redis_url=REDIS_URL)
    second = ClientLimits({"ice": "3/minute"}, redis_url=REDIS_URL)
    try:
        await first.hit(address, "ice")
        await second.hit(address, "ice")
        await first.hit(address, "ice")
        with pytest.raises(RateLimited) as refused:
            await second.hit(address, "ice")  # the fourth, wherever it lands
        assert refused.value.field == "client" and refused.value.retry_after is not None
        await second.hit(address + "-other", "ice")  # another address is unaffected
    finally:
        await first.aclose()
        await second.aclose()
