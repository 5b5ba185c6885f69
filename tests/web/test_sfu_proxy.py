"""/api/sfu's checks, before anything reaches the SFU: locks, bad bodies, mode, and secrets.

The SFU here is a closed port, so a request that got past Parley's checks would come back as 503
(unreachable); every refused request below must be refused with its own status and field first.
The full flows through the stand-in SFU are in tests/rtc/test_sfu_call.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.app import create_app
from parley.errors import ConfigError
from parley.rtc.tokens import TokenSigner
from parley.sessions.keys import session_key
from parley.standins.server import BackgroundServer
from parley.store.users import LOCAL_USER
from tests.conftest import ServerFactory, make_settings

SECRET = "APP-SECRET-proxy-test-do-not-leak"
SID = "abcdef0123456789"


def cloudflare(serve: ServerFactory, tmp_path: Path, **overrides: Any) -> BackgroundServer:
    settings = make_settings(
        tmp_path / "data",
        rtc="cloudflare",
        cloudflare_realtime_app_id="app",
        cloudflare_realtime_app_secret=SECRET,
        realtime_base_url="http://127.0.0.1:9/v1",
        **overrides,
    )
    return serve(settings=settings)


def token_for(server: BackgroundServer, sid: str = SID) -> dict[str, str]:
    tokens: TokenSigner = server.app.state.services.tokens
    # a token locks the SFU session to its user too: here the local user of PARLEY_AUTH=none
    return {"X-Parley-Token": tokens.issue("sfu-session", session_key(LOCAL_USER.id, sid))}


def test_tokens_unlock_only_what_they_were_issued_for() -> None:
    now = [1000.0]
    signer = TokenSigner(b"k" * 32, ttl_seconds=60, clock=lambda: now[0])
    token = signer.issue("sfu-session", "a")
    assert signer.valid("sfu-session", "a", token)
    assert not signer.valid("sfu-session", "b", token)
    assert not signer.valid("call", "a", token)
    assert not TokenSigner(b"x" * 32, clock=lambda: now[0]).valid("sfu-session", "a", token)
    expiry, mac = token.split(".")
    assert not signer.valid("sfu-session", "a", f"{int(expiry) + 3600}.{mac}")  # a longer life is forged
    assert not signer.valid("sfu-session", "a", mac)
    assert not signer.valid("sfu-session", "a", "")
    assert not signer.valid("sfu-session", "a", None)
    assert not signer.valid("sfu-session", "a", token + "x" * 200)
    now[0] += 61
    assert not signer.valid("sfu-session", "a", token)
    assert "k" * 8 not in repr(signer)


async def test_the_mode_is_announced_and_sfu_routes_are_off_in_direct_mode(
    serve: ServerFactory, tmp_path: Path
) -> None:
    direct = serve()
    on = cloudflare(serve, tmp_path)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{direct.url}/api/ice")).json()["mode"] == "direct"
        assert (await http.get(f"{on.url}/api/ice")).json()["mode"] == "cloudflare"
        r = await http.post(f"{direct.url}/api/sfu/sessions/new")
        assert r.status_code == 404 and r.json()["field"] == "PARLEY_RTC"


def test_cloudflare_mode_without_credentials_names_the_variable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rtc="cloudflare", cloudflare_realtime_app_id="app")
    with pytest.raises(ConfigError, match="CLOUDFLARE_REALTIME_APP_SECRET"):
        create_app(settings)


async def test_requests_without_the_sessions_token_are_forbidden(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = cloudflare(serve, tmp_path)
    other = token_for(server, "another-session")
    forged = {"X-Parley-Token": token_for(server)["X-Parley-Token"][:-3] + "abc"}
    requests = [
        ("POST", f"/api/sfu/sessions/{SID}/tracks/new", {"tracks": [{"location": "local", "mid": "0"}]}),
        (
            "PUT",
            f"/api/sfu/sessions/{SID}/renegotiate",
            {"sessionDescription": {"type": "answer", "sdp": "v=0"}},
        ),
        ("PUT", f"/api/sfu/sessions/{SID}/tracks/close", {"tracks": [{"mid": "0"}], "force": True}),
        ("GET", f"/api/sfu/sessions/{SID}", None),
        ("POST", "/api/sfu/calls", {"sessionId": "chat", "sfuSessionId": SID, "trackName": "user-mic"}),
    ]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for headers in ({}, other, forged):
            for method, path, body in requests:
                r = await http.request(method, path, json=body, headers=headers)
                assert r.status_code == 403, (method, path, headers, r.text)
                assert r.json()["field"] == "X-Parley-Token" and r.json()["code"] == "forbidden"
        r = await http.put(
            "/api/sfu/calls/call_x/mic",
            json={"sfuSessionId": SID, "trackName": "m"},
            headers=token_for(server),
        )
        assert r.status_code == 403 and r.json()["field"] == "X-Parley-Call-Token"


OFFER = {"type": "offer", "sdp": "v=0\r\n"}


@pytest.mark.parametrize(
    ("method", "action", "body", "status", "field"),
    [
        ("POST", "tracks/new", {"tracks": []}, 400, "tracks"),
        (
            "POST",
            "tracks/new",
            {
                "tracks": [{"location": "local", "mid": "0", "trackName": "m"}] * 65,
                "sessionDescription": OFFER,
            },
            400,
            "tracks",
        ),
        (
            "POST",
            "tracks/new",
            {"tracks": [{"location": "local", "mid": "0", "trackName": "m"}]},
            400,
            "sessionDescription",
        ),
        (
            "POST",
            "tracks/new",
            {"tracks": [{"location": "local", "trackName": "m"}], "sessionDescription": OFFER},
            400,
            "tracks.0",
        ),
        ("POST", "tracks/new", {"tracks": [{"location": "remote", "sessionId": "s"}]}, 400, "tracks.0"),
        (
            "POST",
            "tracks/new",
            {"tracks": [{"location": "remote", "sessionId": "s", "trackName": "t"}]},
            403,
            "tracks.0.sessionId",
        ),
        (
            "POST",
            "tracks/new",
            {"tracks": [{"location": "remote", "sessionId": "s", "trackName": "t"}], "autoDiscover": True},
            403,
            "autoDiscover",
        ),
        ("POST", "tracks/new", {"tracks": [{"location": "elsewhere"}]}, 400, "tracks.0.location"),
        (
            "POST",
            "tracks/new",
            {
                "tracks": [{"location": "local", "mid": "0", "trackName": "bad name!"}],
                "sessionDescription": OFFER,
            },
            400,
            "tracks.0.trackName",
        ),
        (
            "POST",
            "tracks/new",
            {
                "tracks": [{"location": "local", "mid": "0", "trackName": "m"}],
                "sessionDescription": {"type": "answer", "sdp": "v=0"},
            },
            400,
            "sessionDescription.type",
        ),
        (
            "POST",
            "tracks/new",
            {
                "tracks": [{"location": "local", "mid": "0", "trackName": "m", "x": 1}],
                "sessionDescription": OFFER,
            },
            400,
            "tracks.0.x",
        ),
        (
            "POST",
            "tracks/new",
            {
                "tracks": [{"location": "local", "mid": "0", "trackName": "m"}],
                "sessionDescription": {"type": "offer", "sdp": "x" * 40000},
            },
            400,
            "sessionDescription.sdp",
        ),
        ("PUT", "renegotiate", {"sessionDescription": OFFER}, 400, "sessionDescription.type"),
        ("PUT", "renegotiate", {}, 400, "sessionDescription"),
        ("PUT", "tracks/close", {"tracks": [], "force": True}, 400, "tracks"),
        ("PUT", "tracks/close", {"tracks": [{"mid": "0"}]}, 400, "force"),
    ],
)
async def test_bad_bodies_are_refused_naming_the_field(
    serve: ServerFactory,
    tmp_path: Path,
    method: str,
    action: str,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    server = cloudflare(serve, tmp_path)
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.request(
            method, f"/api/sfu/sessions/{SID}/{action}", json=body, headers=token_for(server)
        )
    assert r.status_code == status, r.text
    assert r.json()["field"] == field, r.json()


async def test_an_unreachable_sfu_is_503_and_never_shows_the_secret(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = cloudflare(serve, tmp_path)
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post("/api/sfu/sessions/new")
        assert r.status_code == 503, r.text
        assert SECRET not in r.text
        r = await http.get(f"/api/sfu/sessions/{SID}", headers=token_for(server))
        assert r.status_code == 503 and SECRET not in r.text
