"""An email names one user however it is spelled: Cloudflare Access and a trusted proxy may hand
Parley `Alice@Example.com` one day and `alice@example.com` the next. A real server each time, a
real key server for Access, real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from parley.providers.testing import EchoChat
from parley.standins.access import AccessIssuer
from parley.standins.server import BackgroundServer, free_port
from tests.conftest import ServerFactory, make_settings

AUD = "parley-test-aud"
SPELLINGS = ["Alice@Example.com", "alice@example.com", "ALICE@EXAMPLE.COM"]


@pytest.fixture
def issuer() -> Iterator[AccessIssuer]:
    port = free_port()
    access = AccessIssuer(team_domain=f"http://127.0.0.1:{port}", audience=AUD)
    with BackgroundServer(access.app, port=port):
        yield access


async def same_person(
    server: BackgroundServer, credential: Callable[[str], dict[str, str]], spellings: list[str]
) -> None:
    """Every spelling of alice's email is one user: one conversation, one (lower-case) name."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        chat = {"sessionId": "s", "message": "hello"}
        r = await client.post("/api/chat", json=chat, headers=credential(spellings[0]))
        assert r.status_code == 200, r.text
        for email in spellings:
            me = (await client.get("/api/me", headers=credential(email))).json()
            assert me["user"]["name"] == "alice@example.com", me
            history = (await client.get("/api/history?sessionId=s", headers=credential(email))).json()
            assert [m["content"] for m in history["messages"]] == ["hello", "You said: hello"]
        # someone else is still someone else
        bob = credential("Bob@Example.com")
        assert (await client.get("/api/me", headers=bob)).json()["user"]["name"] == "bob@example.com"
        assert (await client.get("/api/history?sessionId=s", headers=bob)).json()["messages"] == []


async def test_access_emails_are_case_insensitive(
    issuer: AccessIssuer, serve: ServerFactory, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path / "data", auth="cloudflare-access", access_team_domain=issuer.team_domain, access_aud=AUD
    )
    server = serve(chat=EchoChat(), settings=settings)
    await same_person(
        server,
        lambda email: {"Cf-Access-Jwt-Assertion": issuer.sign(issuer.claims(email=email))},
        # a claim is any JSON string, blanks around it included (a header value cannot hold them)
        [*SPELLINGS, " alice@EXAMPLE.com "],
    )


async def test_trusted_header_emails_are_case_insensitive(serve: ServerFactory, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        auth="trusted-header",
        trusted_header="X-Forwarded-Email",
        trusted_proxies=["127.0.0.1/32"],
    )
    server = serve(chat=EchoChat(), settings=settings)
    await same_person(server, lambda email: {"X-Forwarded-Email": email}, SPELLINGS)
