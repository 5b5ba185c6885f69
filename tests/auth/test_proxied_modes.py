"""Cloudflare Access and trusted-header modes end to end: a real Parley server, a real key server
speaking Access's certs format, and a client on a second loopback address (127.0.0.2) as the
peer that is not the proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from parley.app import create_app
from parley.errors import ConfigError
from parley.providers.testing import EchoChat
from parley.standins.access import AccessIssuer
from parley.standins.server import BackgroundServer, free_port
from tests.conftest import ServerFactory, make_settings

AUD = "parley-test-aud"


@pytest.fixture
def issuer() -> Iterator[AccessIssuer]:
    port = free_port()
    access = AccessIssuer(team_domain=f"http://127.0.0.1:{port}", audience=AUD)
    with BackgroundServer(access.app, port=port):
        yield access


async def test_access_mode_serves_the_jwts_user_and_only_them(
    issuer: AccessIssuer, serve: ServerFactory, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path / "data", auth="cloudflare-access", access_team_domain=issuer.team_domain, access_aud=AUD
    )
    server = serve(chat=EchoChat(), settings=settings)
    ada = {"Cf-Access-Jwt-Assertion": issuer.sign(issuer.claims(email="ada@example.com"))}
    bob = {"Cf-Access-Jwt-Assertion": issuer.sign(issuer.claims(email="bob@example.com"))}
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/api/history?sessionId=s")).status_code == 401
        wrong_aud = {"Cf-Access-Jwt-Assertion": issuer.sign(aud=["another-app"])}
        assert (await client.get("/api/history?sessionId=s", headers=wrong_aud)).status_code == 401
        r = await client.post("/api/chat", json={"sessionId": "s", "message": "hello"}, headers=ada)
        assert r.status_code == 200
        me = (await client.get("/api/me", headers=ada)).json()
        assert me["user"]["name"] == "ada@example.com"
        theirs = (await client.get("/api/history?sessionId=s", headers=bob)).json()
        assert theirs["messages"] == []
        # after a key rotation the new kid is fetched and accepted
        issuer.rotate()
        rotated = {"Cf-Access-Jwt-Assertion": issuer.sign(issuer.claims(email="ada@example.com"))}
        mine = (await client.get("/api/history?sessionId=s", headers=rotated)).json()
        assert [m["content"] for m in mine["messages"]] == ["hello", "You said: hello"]
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(server.url.replace("http", "ws") + "/ws?sessionId=s"):
            pass
    assert refused.value.response.status_code == 401


async def test_trusted_header_only_from_the_proxy(serve: ServerFactory, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        auth="trusted-header",
        trusted_header="X-Forwarded-Email",
        trusted_proxies=["127.0.0.1/32"],
        host="0.0.0.0",
        allowed_hosts=["127.0.0.1"],
    )
    app = create_app(settings, chat=EchoChat())
    with BackgroundServer(app, host="0.0.0.0") as server:
        url = f"http://127.0.0.1:{server.port}"
        header = {"X-Forwarded-Email": "ada@example.com"}
        async with httpx.AsyncClient(base_url=url) as proxy:
            r = await proxy.post("/api/chat", json={"sessionId": "s", "message": "hi"}, headers=header)
            assert r.status_code == 200
            twice = [("X-Forwarded-Email", "ada@example.com"), ("X-Forwarded-Email", "root@example.com")]
            assert (await proxy.get("/api/history?sessionId=s", headers=twice)).status_code == 401
            assert (await proxy.get("/api/history?sessionId=s")).status_code == 401
        # the same header from a peer that is not the proxy (a second loopback address) is no user
        outsider = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=url, transport=outsider) as other:
            r = await other.get("/api/history?sessionId=s", headers=header)
            assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
            assert "You said" not in r.text


def test_proxied_modes_refuse_to_start_without_what_they_need(tmp_path: Path) -> None:
    for mode, missing in (
        ("trusted-header", "PARLEY_TRUSTED_HEADER"),
        ("cloudflare-access", "PARLEY_ACCESS_TEAM_DOMAIN"),
    ):
        with pytest.raises(ConfigError) as err:
            create_app(make_settings(tmp_path, auth=mode))
        assert err.value.field == missing
    with pytest.raises(ConfigError) as err:
        create_app(make_settings(tmp_path, auth="trusted-header", trusted_header="X-Forwarded-Email"))
    assert err.value.field == "PARLEY_TRUSTED_PROXIES"
    assert json.dumps(err.value.to_dict())  # the one error shape
