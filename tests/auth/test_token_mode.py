"""PARLEY_AUTH=token end to end: real `parley users` commands, a real server, real HTTP and WebSocket
clients. Every protected route refuses without a user; users never reach each other's sessions."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from parley import cli
from parley.auth import credentials
from parley.config import Settings
from parley.providers.testing import EchoChat
from parley.standins.server import BackgroundServer
from parley.web.auth import is_public
from tests.conftest import ServerFactory, make_settings

TOKEN_SETTINGS: dict[str, Any] = {"auth": "token", "metrics_token": "scrape-" + "x" * 20}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    # `parley users ...` reads its settings from the environment, as on a real machine
    monkeypatch.setenv("PARLEY_DATA_DIR", str(path))
    monkeypatch.delenv("PARLEY_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    return path


def parley(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    # in a thread of its own: the command runs its own event loop, and async tests hold one
    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(cli.main, list(argv)).result()
    out = capsys.readouterr()
    return code, out.out + out.err


def add_user(capsys: pytest.CaptureFixture[str], name: str, *flags: str) -> str:
    code, out = parley(capsys, "users", "add", name, *flags)
    assert code == 0, out
    token = out.strip().splitlines()[-1]  # the contract: the token is the last line
    assert token.startswith("pk_") and len(token) >= 40
    return token


@pytest.fixture
def server(data_dir: Path, serve: ServerFactory) -> BackgroundServer:
    settings = make_settings(data_dir, **TOKEN_SETTINGS, rate_chat="4/minute")
    return serve(chat=EchoChat(), settings=settings)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ws_url(server: BackgroundServer, session: str) -> str:
    return server.url.replace("http", "ws") + f"/ws?sessionId={session}"


def _routes(server: BackgroundServer) -> Iterator[tuple[str, str]]:
    """Every documented route, the schema itself, and the undocumented /ws and /metrics."""
    yield from [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/ws"), ("GET", "/metrics")]
    for path, operations in server.app.openapi()["paths"].items():
        if is_public(path):
            continue
        for method in operations:
            yield method.upper(), path.replace("{sid}", "x").replace("{call_id}", "c")


def test_every_protected_route_needs_a_user(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = add_user(capsys, "alice")
    routes = list(_routes(server))
    assert (
        ("POST", "/api/chat") in routes and ("GET", "/openapi.json") in routes and ("GET", "/docs") in routes
    )
    with httpx.Client(base_url=server.url) as client:
        for method, path in routes:
            for headers in ({}, bearer("pk_" + "A" * 43), {"Authorization": token}, bearer(token + "x")):
                r = client.request(method, path, headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.text)
                body = r.json()
                assert body["code"] == "unauthenticated" and body["status"] == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        # the app's files and liveness stay open; liveness says no more than ok
        assert client.get("/").status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/api/history?sessionId=s1", headers=bearer(token)).status_code == 200


async def test_a_websocket_without_a_valid_token_is_refused_before_the_upgrade(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = add_user(capsys, "alice")
    for headers in ({}, bearer("pk_wrong")):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(ws_url(server, "s1"), additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body or b"{}")["code"] == "unauthenticated"
    async with websockets.connect(ws_url(server, "s1"), additional_headers=bearer(token)) as ws:
        assert json.loads(await ws.recv())["type"] == "connected"


def test_revoked_tokens_and_disabled_users_stop_working(
    data_dir: Path, serve: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # with the credential cache off, what `parley` changes in another process counts at once
    server = serve(chat=EchoChat(), settings=make_settings(data_dir, **TOKEN_SETTINGS, auth_cache_seconds=0))
    first = add_user(capsys, "alice")
    code, out = parley(capsys, "tokens", "create", "alice")
    second = out.strip().splitlines()[-1]
    assert code == 0 and second != first
    with httpx.Client(base_url=server.url) as client:
        history = "/api/history?sessionId=s1"
        assert client.get(history, headers=bearer(first)).status_code == 200
        code, out = parley(capsys, "tokens", "revoke", credentials.shown_prefix(first))
        assert code == 0, out
        assert client.get(history, headers=bearer(first)).status_code == 401
        assert client.get(history, headers=bearer(second)).status_code == 200
        assert parley(capsys, "users", "disable", "alice")[0] == 0
        assert client.get(history, headers=bearer(second)).status_code == 401
        assert parley(capsys, "users", "enable", "alice")[0] == 0
        assert client.get(history, headers=bearer(second)).status_code == 200
    code, out = parley(capsys, "tokens", "list")
    assert credentials.shown_prefix(first) in out and first not in out and second not in out
    assert parley(capsys, "tokens", "revoke", "pk_nothing-like-it")[0] == 1
    assert parley(capsys, "users", "add", "alice")[0] == 1  # taken


def test_a_cached_credential_outlives_its_revocation_elsewhere_but_not_a_sign_out(
    data_dir: Path, serve: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(data_dir, **TOKEN_SETTINGS, auth_cache_seconds=3600)
    server = serve(chat=EchoChat(), settings=settings)
    token = add_user(capsys, "alice")
    with httpx.Client(base_url=server.url) as client:
        history = "/api/history?sessionId=s1"
        assert client.get(history, headers=bearer(token)).status_code == 200
        assert parley(capsys, "tokens", "revoke", credentials.shown_prefix(token))[0] == 0
        # PARLEY_AUTH_CACHE_SECONDS=3600: this process remembers the token for an hour
        assert client.get(history, headers=bearer(token)).status_code == 200
        # a sign-out in this process ends its cookie at once, cache or not
        fresh = parley(capsys, "tokens", "create", "alice")[1].strip().splitlines()[-1]
        origin = {"Origin": server.url}
        assert client.post("/api/auth/signin", json={"token": fresh}, headers=origin).status_code == 200
        assert client.get(history).status_code == 200
        cookie = client.cookies["parley_session"]
        assert client.post("/api/auth/signout", headers=origin).status_code == 200
        assert client.get(history, headers={"Cookie": f"parley_session={cookie}"}).status_code == 401


async def test_users_never_reach_each_others_sessions(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = add_user(capsys, "alice"), add_user(capsys, "bob")
    async with httpx.AsyncClient(base_url=server.url) as client:
        # bob watches "s1" (his own s1) while alice talks in hers
        async with websockets.connect(ws_url(server, "s1"), additional_headers=bearer(bob)) as bob_ws:
            assert json.loads(await bob_ws.recv())["type"] == "connected"
            r = await client.post(
                "/api/chat", json={"sessionId": "s1", "message": "secret"}, headers=bearer(alice)
            )
            assert r.status_code == 200 and r.json()["sessionId"] == "s1"
            # bob's socket then sees his own turn first: nothing of alice's came before it
            r = await client.post(
                "/api/chat", json={"sessionId": "s1", "message": "mine"}, headers=bearer(bob)
            )
            assert r.status_code == 200
            while (event := json.loads(await bob_ws.recv()))["type"] != "reply":
                assert "secret" not in json.dumps(event)
            assert event["response"] == "You said: mine"
        a = (await client.get("/api/history?sessionId=s1", headers=bearer(alice))).json()
        b = (await client.get("/api/history?sessionId=s1", headers=bearer(bob))).json()
        assert [m["content"] for m in a["messages"]] == ["secret", "You said: secret"]
        assert [m["content"] for m in b["messages"]] == ["mine", "You said: mine"]
        # bob's clear clears his s1 only
        r = await client.post("/api/clear", json={"sessionId": "s1"}, headers=bearer(bob))
        assert r.json()["removed"] == 2
        a_after = (await client.get("/api/history?sessionId=s1", headers=bearer(alice))).json()
        assert a_after["messages"] == a["messages"]
        # bob cannot hang up a call he does not own (here: a call id that is not his)
        r = await client.post("/api/hangup", json={"callId": "call-of-alice"}, headers=bearer(bob))
        assert r.status_code == 404


def test_metrics_need_an_admin_or_the_scraper_token(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    user, admin = add_user(capsys, "alice"), add_user(capsys, "root", "--admin")
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/metrics").status_code == 401
        refused = client.get("/metrics", headers=bearer(user))
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert client.get("/metrics", headers=bearer(admin)).status_code == 200
        assert client.get("/metrics", headers=bearer(TOKEN_SETTINGS["metrics_token"])).status_code == 200
        assert (
            client.get("/metrics", headers=bearer(TOKEN_SETTINGS["metrics_token"] + "y")).status_code == 401
        )


def test_the_web_sign_in_cookie_works_until_sign_out_and_only_from_our_pages(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = add_user(capsys, "alice")
    origin = {"Origin": server.url}
    with httpx.Client(base_url=server.url) as client:
        wrong = client.post("/api/auth/signin", json={"token": token + "x"}, headers=origin)
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        r = client.post("/api/auth/signin", json={"token": token}, headers=origin)
        assert r.status_code == 200 and r.json() == {"name": "alice", "admin": False}
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert token not in cookie  # the cookie is a credential of its own
        assert client.get("/api/history?sessionId=s1").status_code == 200
        chat = {"sessionId": "s1", "message": "hi"}
        # a state change by cookie needs the page's Origin: a script or form elsewhere sends none
        refused = client.post("/api/chat", json=chat)
        assert refused.status_code == 403 and refused.json()["field"] == "Origin"
        foreign = client.post("/api/chat", json=chat, headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        assert client.post("/api/chat", json=chat, headers=origin).status_code == 200
        assert client.post("/api/auth/signout", headers=origin).status_code == 200
        assert client.get("/api/history?sessionId=s1").status_code == 401
        # a stolen copy of the signed-out cookie is dead too
        value = cookie.split(";", 1)[0].split("=", 1)[1]
        dead = httpx.get(server.url + "/api/history?sessionId=s1", cookies={"parley_session": value})
        assert dead.status_code == 401


async def test_the_chat_rate_is_per_user(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = add_user(capsys, "alice"), add_user(capsys, "bob")
    async with httpx.AsyncClient(base_url=server.url) as client:
        for i in range(4):
            r = await client.post(
                "/api/chat", json={"sessionId": "s", "message": f"m{i}"}, headers=bearer(alice)
            )
            assert r.status_code == 200
        refused = await client.post(
            "/api/chat", json={"sessionId": "s", "message": "m5"}, headers=bearer(alice)
        )
        assert refused.status_code == 429
        body = refused.json()
        assert body["code"] == "rate_limited" and body["limit"] == "4/minute"
        assert int(refused.headers["Retry-After"]) >= 1
        history = (await client.get("/api/history?sessionId=s", headers=bearer(alice))).json()
        assert len(history["messages"]) == 8  # the refused turn changed nothing
        assert (
            await client.post("/api/chat", json={"sessionId": "s", "message": "hi"}, headers=bearer(bob))
        ).status_code == 200
        # over the socket, a refused turn is an error event and the socket stays open
        async with websockets.connect(ws_url(server, "s"), additional_headers=bearer(alice)) as ws:
            assert json.loads(await ws.recv())["type"] == "connected"
            await ws.send(json.dumps({"type": "chat", "message": "again", "clientId": "c1"}))
            event = json.loads(await ws.recv())
            assert event["type"] == "error" and event["error"]["code"] == "rate_limited"
            assert event["clientId"] == "c1"
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv())["type"] == "pong"


async def test_no_token_or_digest_reaches_a_log_line_or_a_response(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    token = add_user(capsys, "alice")
    secrets = [token, credentials.digest(token), TOKEN_SETTINGS["metrics_token"]]
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=server.url) as client:
        for r in (
            await client.post("/api/auth/signin", json={"token": token}, headers={"Origin": server.url}),
            await client.post("/api/chat", json={"sessionId": "s", "message": token}, headers=bearer("pk_x")),
            await client.post("/api/chat", json={"sessionId": "s", "message": "hi"}, headers=bearer(token)),
            await client.get("/api/history?sessionId=s", headers=bearer(token)),
            await client.get("/metrics", headers=bearer(token)),
            await client.get("/api/history?sessionId=s", headers={"Authorization": f"Basic {token}"}),
        ):
            seen.append(r.text + json.dumps(dict(r.headers)))
    seen.append(caplog.text)
    for text in seen:
        for secret in secrets:
            assert secret not in text


def test_an_unauthenticated_server_refuses_to_listen_beyond_loopback(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = parley(capsys, "serve", "--host", "0.0.0.0", "--port", "9")
    assert code == 2 and "PARLEY_AUTH" in out and "refusing" in out
    # PARLEY_ALLOW_OPEN needs an explicit PARLEY_AUTH=none: one setting alone does not open it
    monkeypatch.setenv("PARLEY_ALLOW_OPEN", "true")
    code, out = parley(capsys, "serve", "--host", "192.168.1.5", "--port", "9")
    assert code == 2 and "PARLEY_AUTH" in out


def test_the_exposure_rule() -> None:
    from parley.auth.exposure import check_exposure
    from parley.errors import ConfigError

    def settings(**kw: Any) -> Settings:
        return Settings(_env_file=None, **kw)  # type: ignore[call-arg]

    assert check_exposure(settings(), ["127.0.0.1", "::1", "localhost", "[::1]"], auth_explicit=False) is None
    with pytest.raises(ConfigError):
        check_exposure(settings(), ["0.0.0.0"], auth_explicit=False)
    with pytest.raises(ConfigError):
        check_exposure(settings(allow_open=True), ["0.0.0.0"], auth_explicit=False)
    warning = check_exposure(settings(auth="none", allow_open=True), ["0.0.0.0"], auth_explicit=True)
    assert warning is not None and "0.0.0.0" in warning
    assert check_exposure(settings(auth="token"), ["0.0.0.0"], auth_explicit=True) is None
