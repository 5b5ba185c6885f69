"""The conversation list follows the user's `conversations` events, in a real chromium against a
real Parley: two browsers of one user (a laptop and a phone, so no BroadcastChannel between
them); what one creates, renames, talks in or deletes appears in the other's list at once, and the
other never fetches the list again to see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, Request, expect

from parley.providers.testing import EchoChat
from tests.browser.conftest import launch
from tests.browser.test_app import open_app
from tests.browser.test_conversations import SIZES, exchange, item, item_menu, listed, sidebar, url_session

pytestmark = pytest.mark.browser


def record_list_fetches(page: Page) -> list[str]:
    fetched: list[str] = []

    def seen(request: Request) -> None:
        if "/api/sessions" in request.url and request.method == "GET":
            fetched.append(request.url)

    page.on("request", seen)
    return fetched


async def test_the_list_follows_another_browser_of_the_user(serve: Any, tmp_path: Path) -> None:
    server = serve(chat=EchoChat())
    async with (
        launch(tmp_path / "laptop") as laptop,
        launch(tmp_path / "phone", viewport=SIZES["phone"]) as phone,
    ):
        one = await open_app(laptop, server.url)
        seeded = await one.request.post(f"{server.url}/api/sessions", data={"title": "An older one"})
        assert seeded.status == 201
        older = (await seeded.json())["sessionId"]
        two = await open_app(phone, server.url)
        await sidebar(two)
        await expect(listed(two)).to_have_text(["An older one"])
        fetched = record_list_fetches(two)

        # created (by its first turn) in one browser: at the top of the other's list
        await exchange(one, "planning a trip to the mountains")
        made = url_session(one)
        await expect(listed(two)).to_have_text(["planning a trip to the mountains", "An older one"])

        # renamed
        await (await item_menu(one, made)).get_by_test_id("menu-rename").click()
        await one.get_by_test_id("rename-input").fill("Mountain trip")
        await one.get_by_test_id("rename-input").press("Enter")
        await expect(listed(two)).to_have_text(["Mountain trip", "An older one"])

        # a turn in the older one moves it to the top
        await one.goto(f"{server.url}/c/{older}")
        await exchange(one, "back to this one")
        await expect(listed(two)).to_have_text(["An older one", "Mountain trip"])

        # deleted
        await (await item_menu(one, made)).get_by_test_id("menu-delete").click()
        await one.get_by_test_id("undo-toast").get_by_test_id("delete-now").click()
        await expect(item(two, made)).to_have_count(0)
        await expect(listed(two)).to_have_text(["An older one"])

        assert fetched == [], "the list was fetched again instead of following the events"
