"""A conversation's address, /c/<id>: the web app's page, public like "/", under the app's CSP."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from parley.providers.testing import EchoChat
from parley.web.headers import APP_CSP
from tests.conftest import ServerFactory, make_settings


def test_a_conversation_address_serves_the_app_without_a_sign_in(
    tmp_path: Path, serve: ServerFactory
) -> None:
    server = serve(chat=EchoChat(), settings=make_settings(tmp_path / "data", auth="token"))
    with httpx.Client(base_url=server.url) as client:
        root = client.get("/")
        page = client.get("/c/c0123abcd")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["Content-Security-Policy"] == APP_CSP
        assert page.headers["X-Frame-Options"] == "DENY"
        # the same page, one folder down: every file it loads is found from there
        assets = re.findall(r'(?:src|href)="(\.\./static/[^"]+)"', page.text)
        assert {"../static/app.js", "../static/app.css", "../static/theme.js"} <= set(assets)
        assert page.text.replace('="../static/', '="static/') == root.text
        for asset in assets:
            assert client.get(httpx.URL(str(page.url)).join(asset)).status_code == 200, asset
        # the page holds no data: the conversation itself still needs a sign-in
        assert client.get("/api/history?sessionId=c0123abcd").status_code == 401

        bad = client.get("/c/-not-an-id")
        assert bad.status_code == 400
        assert bad.json()["field"] == "sessionId"


def test_the_devices_page_serves_the_app_without_a_sign_in(tmp_path: Path, serve: ServerFactory) -> None:
    server = serve(chat=EchoChat(), settings=make_settings(tmp_path / "data", auth="token"))
    with httpx.Client(base_url=server.url) as client:
        page = client.get("/devices")
        assert page.status_code == 200, page.text  # signed out, the app shows its sign-in
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["Content-Security-Policy"] == APP_CSP
        # the list itself still needs a sign-in
        assert client.get("/api/devices").status_code == 401
