"""The web app's sign-in (PARLEY_AUTH=token) in a real chromium against a real Parley server.

Users and tokens come from the real `parley users` / `parley tokens` commands. A second origin
(a page served from 127.0.0.2, another site to the browser) posts forms at Parley while the
browser holds Parley's session cookie.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from parley.auth import credentials
from parley.auth.tokens import COOKIE
from parley.providers.testing import EchoChat
from parley.standins.server import BackgroundServer
from tests.auth.test_token_mode import add_user, parley
from tests.browser.test_app import content, messages, send, session_id
from tests.conftest import ServerFactory, make_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    # `parley users ...` reads its settings from the environment, as on a real machine
    monkeypatch.setenv("PARLEY_DATA_DIR", str(path))
    monkeypatch.delenv("PARLEY_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    return path


@pytest.fixture
def server(data_dir: Path, serve: ServerFactory) -> BackgroundServer:
    return serve(chat=EchoChat(), settings=make_settings(data_dir, auth="token"))


async def tab(context: BrowserContext, url: str) -> Page:
    blank = [p for p in context.pages if p.url == "about:blank"]
    page = blank[0] if blank else await context.new_page()
    await page.goto(url)
    return page


async def sign_in(page: Page, token: str) -> None:
    await page.get_by_test_id("signin-token").fill(token)
    await page.get_by_test_id("signin-submit").click()


async def session_cookie(context: BrowserContext) -> dict[str, Any] | None:
    found = [dict(c) for c in await context.cookies() if c.get("name") == COOKIE]
    return found[0] if found else None


async def expect_signed_in(page: Page, name: str) -> None:
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    await expect(page.get_by_test_id("signin")).to_be_hidden()
    await expect(page.get_by_test_id("account-name")).to_have_text(name)


async def test_sign_in_chat_reload_and_sign_out(
    server: BackgroundServer, browser: BrowserContext, capsys: pytest.CaptureFixture[str]
) -> None:
    token = add_user(capsys, "alice")
    page = await tab(browser, server.url)
    form = page.get_by_test_id("signin-form")
    await expect(form).to_be_visible()
    await expect(page.get_by_test_id("input")).to_be_hidden()  # the app waits behind the form

    await sign_in(page, token)

    await expect_signed_in(page, "alice")
    await expect(page.get_by_test_id("signout")).to_be_visible()
    cookie = await session_cookie(browser)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["value"] != token
    # the token itself is kept nowhere the page can reach
    kept: str = await page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert token not in kept and token not in page.url
    assert await page.get_by_test_id("signin-token").input_value() == ""

    await send(page, "hello behind a sign-in")
    reply = messages(page, "assistant")
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(content(reply)).to_have_text("You said: hello behind a sign-in")

    # the cookie keeps this browser signed in; the conversation comes back from history
    await page.reload()
    await expect_signed_in(page, "alice")
    await expect(messages(page)).to_have_count(2)
    await expect(content(messages(page, "assistant"))).to_have_text("You said: hello behind a sign-in")

    # a second tab of the same browser follows the sign-out
    other = await tab(browser, server.url)
    await expect_signed_in(other, "alice")

    await page.get_by_test_id("signout").click()

    for each in (page, other):
        await expect(each.get_by_test_id("signin-form")).to_be_visible()
        await expect(each.get_by_test_id("input")).to_be_hidden()
    assert await session_cookie(browser) is None
    assert (await page.request.get(f"{server.url}/api/me")).status == 401
    # the cookie's credential is gone on the server too, not only from this browser
    dead = await page.request.get(f"{server.url}/api/me", headers={"Cookie": f"{COOKIE}={cookie['value']}"})
    assert dead.status == 401


async def test_a_wrong_or_revoked_token_says_so(
    server: BackgroundServer, browser: BrowserContext, capsys: pytest.CaptureFixture[str]
) -> None:
    add_user(capsys, "alice")
    code, out = parley(capsys, "tokens", "create", "alice")
    revoked = out.strip().splitlines()[-1]
    assert code == 0 and parley(capsys, "tokens", "revoke", credentials.shown_prefix(revoked))[0] == 0
    page = await tab(browser, server.url)
    error = page.get_by_test_id("signin-error")
    await expect(error).to_be_hidden()

    for wrong in ("pk_" + "A" * 43, revoked):
        await sign_in(page, wrong)
        await expect(error).to_be_visible()
        await expect(error).to_contain_text("not valid")
        await expect(error).to_contain_text("revoked")
        await error.evaluate("el => { el.hidden = true; }")  # the next answer must show it again

    await expect(page.get_by_test_id("signin-form")).to_be_visible()
    await expect(page.get_by_test_id("input")).to_be_hidden()
    assert await session_cookie(browser) is None
    assert (await page.request.get(f"{server.url}/api/me")).status == 401


FORM_PAGE = """<!doctype html><meta charset="utf-8"><title>elsewhere</title>
<body onload="document.forms[0].submit()">
<form method="post" action="{action}"><input name="sessionId" value="{session}"></form>
</body>"""


async def test_a_cross_site_form_post_is_refused(
    server: BackgroundServer, browser: BrowserContext, capsys: pytest.CaptureFixture[str]
) -> None:
    token = add_user(capsys, "alice")
    page = await tab(browser, server.url)
    await sign_in(page, token)
    await expect_signed_in(page, "alice")
    await send(page, "keep this")
    await expect(messages(page, "assistant")).to_have_attribute("data-status", "complete")
    sid = await session_id(page)

    pages: dict[str, tuple[str, str]] = {
        "/clear": (f"{server.url}/api/clear", sid),
        "/signout": (f"{server.url}/api/auth/signout", sid),
    }

    async def form_page(request: Request) -> HTMLResponse:
        action, session = pages[request.url.path]
        return HTMLResponse(FORM_PAGE.format(action=html.escape(action), session=html.escape(session)))

    with BackgroundServer(Starlette(routes=[Route("/{name}", form_page)]), host="127.0.0.2") as other:
        assert other.url.split(":")[1] != server.url.split(":")[1]  # another host, so another site
        evil = await browser.new_page()
        for path, (action, _) in pages.items():
            async with evil.expect_response(lambda r, action=action: r.url == action) as answer:
                await evil.goto(other.url + path)
            response = await answer.value
            assert response.request.method == "POST"
            assert response.status == 403, (path, await response.text())
            body = await response.json()
            assert body["code"] == "forbidden" and body["field"] == "Origin"

    # nothing changed: still signed in, the conversation is all there
    assert await session_cookie(browser) is not None
    assert (await page.request.get(f"{server.url}/api/me")).status == 200
    await page.reload()
    await expect_signed_in(page, "alice")
    await expect(messages(page)).to_have_count(2)


async def test_no_sign_in_page_without_token_mode(
    data_dir: Path, serve: ServerFactory, browser: BrowserContext
) -> None:
    # PARLEY_AUTH=none: the app as it always was, no name, no sign-out
    local = serve(chat=EchoChat(), settings=make_settings(data_dir / "none"))
    page = await tab(browser, local.url)
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    await expect(page.get_by_test_id("account")).to_be_hidden()
    await expect(page.get_by_test_id("signin")).to_be_hidden()

    # behind a trusted proxy, the proxy signs in: its user's name, no sign-out and no form
    proxied = make_settings(
        data_dir / "proxied",
        auth="trusted-header",
        trusted_header="X-Forwarded-Email",
        trusted_proxies=["127.0.0.1/32"],
    )
    behind = serve(chat=EchoChat(), settings=proxied)
    await page.set_extra_http_headers({"X-Forwarded-Email": "ada@example.com"})
    await page.goto(behind.url)
    await expect_signed_in(page, "ada@example.com")
    await expect(page.get_by_test_id("signout")).to_be_hidden()

    # the same server reached without its proxy's header: it says why, and offers no form
    await page.set_extra_http_headers({})
    await page.goto(behind.url)
    refused = page.get_by_test_id("signin-proxied")
    await expect(refused).to_be_visible()
    await expect(refused).to_contain_text("X-Forwarded-Email")
    await expect(page.get_by_test_id("signin-form")).to_be_hidden()
    await expect(page.get_by_test_id("input")).to_be_hidden()


async def test_a_sign_in_that_ends_meanwhile_returns_to_the_form(
    server: BackgroundServer, browser: BrowserContext, capsys: pytest.CaptureFixture[str]
) -> None:
    token = add_user(capsys, "alice")
    page = await tab(browser, server.url)
    await sign_in(page, token)
    await expect_signed_in(page, "alice")
    cookie = await session_cookie(browser)
    assert cookie is not None
    # the server ends this sign-in behind the page's back (as an expiry would); the browser
    # still holds the cookie
    async with httpx.AsyncClient(base_url=server.url) as client:
        ended = await client.post(
            "/api/auth/signout", headers={"Origin": server.url, "Cookie": f"{COOKIE}={cookie['value']}"}
        )
    assert ended.status_code == 200
    assert await session_cookie(browser) is not None

    # the tab is shown again (the user comes back to it): it finds its sign-in gone
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")

    await expect(page.get_by_test_id("signin-form")).to_be_visible()
    await expect(page.get_by_test_id("input")).to_be_hidden()
