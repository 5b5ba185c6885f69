"""The web app's conversations in a real chromium against a real Parley, at desktop and phone sizes.

The sidebar (a drawer on a phone): the list, new chat, rename, delete with undo, export; tabs that
hold different conversations; a conversation's address (/c/<id>) followed live by another
browser; search that opens the matched message; the copy button of a code block; a confirmation
before clearing. Each state is saved as a screenshot and checked not to be blank.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Locator, Page, ViewportSize, expect

from parley.providers.testing import EchoChat
from tests.browser.conftest import launch
from tests.browser.test_app import content, messages, open_app, send

pytestmark = pytest.mark.browser

SIZES: dict[str, ViewportSize] = {
    "desktop": {"width": 1280, "height": 800},
    "phone": {"width": 390, "height": 844},
}
CONVERSATION_URL = re.compile(r"/c/([A-Za-z0-9][A-Za-z0-9_.:-]*)$")


@pytest.fixture(params=list(SIZES))
async def sized(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A browser at desktop size, then at phone size."""
    async with launch(tmp_path / "profile", viewport=SIZES[request.param]) as context:
        yield context


def is_phone(page: Page) -> bool:
    size = page.viewport_size
    return size is not None and size["width"] < 800


def url_session(page: Page) -> str:
    match = CONVERSATION_URL.search(page.url.split("#")[0])
    assert match, page.url
    return match.group(1)


async def sidebar(page: Page) -> Locator:
    """The sidebar, visible: on a phone, opened as a drawer first."""
    bar = page.get_by_test_id("sidebar")
    if is_phone(page) and await bar.get_attribute("data-open") != "true":
        await page.get_by_test_id("drawer-toggle").click()
    await expect(bar).to_be_visible()
    return bar


def listed(page: Page) -> Locator:
    return page.get_by_test_id("conversation-title")


def item(page: Page, session: str) -> Locator:
    return page.locator(f'[data-testid="conversation"][data-session-id="{session}"]')


async def item_menu(page: Page, session: str) -> Locator:
    await sidebar(page)
    await item(page, session).get_by_test_id("conversation-menu-button").click()
    menu = page.get_by_test_id("menu")
    await expect(menu).to_be_visible()
    return menu


async def exchange(page: Page, text: str) -> None:
    """Send `text` and wait for its echo to be complete."""
    before = await messages(page, "assistant").count()
    await send(page, text)
    reply = messages(page, "assistant").nth(before)
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(content(reply)).to_have_text(f"You said: {text}")


def png_pixels(path: Path) -> bytes:
    """The decompressed image data of a PNG (filter bytes included): enough to tell blank from not."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat = 8, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        if kind == b"IDAT":
            idat += data[at + 8 : at + 8 + length]
        at += 12 + length
    return zlib.decompress(idat)


def read_text(path: Path | str) -> str:
    return Path(path).read_text(encoding="utf-8")


async def snap(page: Page, directory: Path, name: str) -> bytes:
    """Screenshot the page; assert it is not blank (many distinct byte values, not one colour)."""
    path = directory / f"{name}.png"
    await page.screenshot(path=str(path), animations="disabled")
    pixels = png_pixels(path)
    assert len(set(pixels)) > 40, f"{name}: the screenshot looks blank"
    return pixels


async def api_sessions(page: Page, base: str) -> list[dict[str, Any]]:
    response = await page.request.get(f"{base}/api/sessions")
    assert response.ok
    body: dict[str, Any] = await response.json()
    return body["sessions"]


async def test_list_new_chat_rename_and_delete_with_undo(
    serve: Any, sized: BrowserContext, tmp_path: Path
) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(sized, server.url)
    await expect(page).to_have_url(CONVERSATION_URL)  # a bare "/" shows its conversation's address
    first = url_session(page)
    shots = [await snap(page, tmp_path, "empty")]

    await exchange(page, "alpha question about kites")
    bar = await sidebar(page)
    await expect(listed(page)).to_have_text(["alpha question about kites"])
    await expect(item(page, first)).to_have_class(re.compile(r"\bcurrent\b"))
    shots.append(await snap(page, tmp_path, "listed"))

    await bar.get_by_test_id("sidebar-new-chat").click()
    await expect(messages(page)).to_have_count(0)
    await expect(page).not_to_have_url(re.compile(re.escape(first)))
    second = url_session(page)
    await exchange(page, "beta question about boats")
    await sidebar(page)
    await expect(listed(page)).to_have_text(["beta question about boats", "alpha question about kites"])
    await expect(item(page, second)).to_have_class(re.compile(r"\bcurrent\b"))
    shots.append(await snap(page, tmp_path, "two-listed"))

    # the list's link opens the other conversation, from history
    await listed(page).nth(1).click()
    await expect(page).to_have_url(re.compile(f"/c/{first}$"))
    await expect(content(messages(page, "user"))).to_have_text("alpha question about kites")
    await page.go_back()
    await expect(page).to_have_url(re.compile(f"/c/{second}$"))
    await expect(content(messages(page, "user"))).to_have_text("beta question about boats")

    # rename in place
    await (await item_menu(page, second)).get_by_test_id("menu-rename").click()
    field = page.get_by_test_id("rename-input")
    await expect(field).to_be_focused()
    shots.append(await snap(page, tmp_path, "renaming"))
    await field.fill("Boats, renamed")
    await field.press("Enter")
    await expect(listed(page).first).to_have_text("Boats, renamed")
    await expect(page).to_have_title("Boats, renamed · Parley")
    titles = {s["sessionId"]: s["title"] for s in await api_sessions(page, server.url)}
    assert titles == {second: "Boats, renamed", first: "alpha question about kites"}

    # delete the open conversation, then undo: nothing is deleted
    await (await item_menu(page, second)).get_by_test_id("menu-delete").click()
    toast = page.get_by_test_id("undo-toast")
    await expect(toast).to_contain_text("Boats, renamed")
    await expect(item(page, second)).to_have_count(0)
    await expect(messages(page)).to_have_count(0)  # it left the screen with the list
    shots.append(await snap(page, tmp_path, "undo"))
    await toast.get_by_test_id("undo").click()
    await expect(item(page, second)).to_have_count(1)
    await expect(page).to_have_url(re.compile(f"/c/{second}$"))
    await expect(content(messages(page, "user"))).to_have_text("beta question about boats")
    assert len(await api_sessions(page, server.url)) == 2

    # delete the other one for good
    await (await item_menu(page, first)).get_by_test_id("menu-delete").click()
    deleting = page.get_by_test_id("undo-toast")
    await expect(item(page, first)).to_have_count(0)
    async with page.expect_response(lambda r: r.request.method == "DELETE") as answer:
        await deleting.get_by_test_id("delete-now").click()
    assert (await answer.value).ok
    await expect(deleting).to_have_count(0)
    assert [s["sessionId"] for s in await api_sessions(page, server.url)] == [second]
    history = await page.request.get(f"{server.url}/api/history?sessionId={first}")
    assert (await history.json())["messages"] == []
    await expect(content(messages(page, "user"))).to_have_text("beta question about boats")
    shots.append(await snap(page, tmp_path, "deleted"))
    assert len(set(shots)) == len(shots), "two states looked the same"


async def test_clear_asks_first(serve: Any, sized: BrowserContext, tmp_path: Path) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(sized, server.url)
    await exchange(page, "keep me")
    dialog = page.get_by_test_id("confirm-dialog")

    await page.get_by_test_id("clear").click()
    await expect(dialog).to_be_visible()
    await snap(page, tmp_path, "confirm")
    await dialog.get_by_test_id("confirm-cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(messages(page)).to_have_count(2)

    await page.get_by_test_id("clear").click()
    await dialog.get_by_test_id("confirm-ok").click()
    await expect(messages(page)).to_have_count(0)
    response = await page.request.get(f"{server.url}/api/history?sessionId={url_session(page)}")
    assert (await response.json())["messages"] == []


async def test_tabs_hold_different_conversations(serve: Any, sized: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    one = await open_app(sized, server.url)
    await exchange(one, "the first tab's chat")
    two = await open_app(sized, server.url)  # a bare "/" opens the last conversation of this browser
    await expect(two).to_have_url(re.compile(f"/c/{url_session(one)}$"))
    await expect(messages(two)).to_have_count(2)

    await two.get_by_test_id("new-chat").click()
    await expect(messages(two)).to_have_count(0)
    await exchange(two, "the second tab's chat")

    # the first tab keeps its conversation, and its list shows the one started in the other tab
    await expect(content(messages(one, "user"))).to_have_text("the first tab's chat")
    await expect(messages(one)).to_have_count(2)
    await sidebar(one)
    await expect(listed(one)).to_have_text(["the second tab's chat", "the first tab's chat"])
    # a rename in one tab reaches the other's list
    await (await item_menu(two, url_session(two))).get_by_test_id("menu-rename").click()
    await two.get_by_test_id("rename-input").fill("Second, renamed")
    await two.get_by_test_id("rename-input").press("Enter")
    await expect(listed(one).first).to_have_text("Second, renamed")

    # a reload keeps each tab on its own conversation
    for tab, text in ((one, "the first tab's chat"), (two, "the second tab's chat")):
        await tab.reload()
        await expect(content(messages(tab, "user"))).to_have_text(text)


async def test_a_conversation_address_follows_live_elsewhere(serve: Any, tmp_path: Path) -> None:
    server = serve(chat=EchoChat(token_interval=0.02))
    async with (
        launch(tmp_path / "laptop") as laptop,
        launch(tmp_path / "phone", viewport=SIZES["phone"]) as phone,
    ):
        page = await open_app(laptop, server.url)
        await exchange(page, "said on the laptop")
        link = page.url

        other = await open_app(phone, link)
        await expect(content(messages(other, "user"))).to_have_text("said on the laptop")
        await exchange(page, "and a second turn, live")
        await expect(content(messages(other, "assistant").nth(1))).to_have_text(
            "You said: and a second turn, live"
        )
        await snap(other, tmp_path, "followed")

        # and the other way round: a turn sent from the phone appears on the laptop
        await exchange(other, "from the phone")
        await expect(content(messages(page, "user").nth(2))).to_have_text("from the phone")

        # deleted on the laptop: the phone is told, and leaves it for a new chat
        sid = url_session(page)
        await (await item_menu(page, sid)).get_by_test_id("menu-delete").click()
        await page.get_by_test_id("undo-toast").get_by_test_id("delete-now").click()
        await expect(other.get_by_test_id("toast")).to_contain_text("This conversation was deleted.")
        await expect(messages(other)).to_have_count(0)
        await expect(other).not_to_have_url(re.compile(f"/c/{sid}$"))


async def test_search_opens_the_matched_message(serve: Any, sized: BrowserContext, tmp_path: Path) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(sized, server.url)
    await exchange(page, "nothing to see here")
    # another conversation, long enough that the hit is off screen when it opens
    markup = await page.request.post(
        f"{server.url}/api/chat", data={"message": "tangerine <b>bold</b> <img src=x>", "sessionId": "seeded"}
    )
    assert markup.ok
    for i in range(14):
        word = "periwinkle" if i == 3 else f"filler{i}"
        response = await page.request.post(
            f"{server.url}/api/chat",
            data={"message": f"message {i} about {word} and more", "sessionId": "seeded"},
        )
        assert response.ok

    await page.keyboard.press("Control+k")
    await sidebar(page)
    box = page.get_by_test_id("search")
    await expect(box).to_be_focused()
    await box.fill("periwinkle")
    results = page.get_by_test_id("search-result")
    await expect(results).to_have_count(2)  # the question and its echo
    marks = page.get_by_test_id("search-snippet").locator("mark")
    await expect(marks).to_have_text(["periwinkle", "periwinkle"])
    shots = [await snap(page, tmp_path, "search")]

    hit = results.filter(has_text="You: ")
    await hit.click()
    await expect(page).to_have_url(re.compile(r"/c/seeded#m\d+$"))
    marked = page.locator('[data-testid="message"][data-hit="true"]')
    await expect(marked).to_have_count(1)
    await expect(content(marked)).to_have_text("message 3 about periwinkle and more")
    await expect(marked).to_be_in_viewport()
    await expect(messages(page, "user").last).not_to_be_in_viewport()
    shots.append(await snap(page, tmp_path, "search-hit"))
    assert shots[0] != shots[1]

    # a query that finds nothing says so; markup in a query stays text
    await sidebar(page)
    await box.fill("<b>zzzqqq</b>")
    await expect(page.get_by_test_id("search-status")).to_have_text("No messages match.")
    await expect(results).to_have_count(0)
    await box.fill("tangerine")
    await expect(results).to_have_count(2)
    snippet = page.get_by_test_id("search-snippet").first
    await expect(snippet).to_contain_text("tangerine <b>bold</b> <img src=x>")
    await expect(snippet.locator("mark")).to_have_text("tangerine")
    assert await page.get_by_test_id("search-results").locator("b, img").count() == 0


async def test_older_conversations_page_in(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url)
    made = []
    for i in range(53):
        response = await page.request.post(f"{server.url}/api/sessions", data={"title": f"Topic {i}"})
        assert response.status == 201
        made.append((await response.json())["sessionId"])
    await page.reload()
    await expect(listed(page)).to_have_count(50)
    await expect(listed(page).first).to_have_text("Topic 52")  # newest first
    more = page.get_by_test_id("conversations-more")
    await more.click()
    await expect(listed(page)).to_have_count(53)
    await expect(listed(page).last).to_have_text("Topic 0")
    await expect(more).to_be_hidden()
    shown = await page.get_by_test_id("conversation").evaluate_all("els => els.map(e => e.dataset.sessionId)")
    assert shown == made[::-1]


async def test_export_downloads_the_conversation(serve: Any, sized: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(sized, server.url)
    await exchange(page, "export me please")
    sid = url_session(page)

    menu = await item_menu(page, sid)
    async with page.expect_download() as json_download:
        await menu.get_by_test_id("menu-export-json").click()
    download = await json_download.value
    assert download.suggested_filename == f"parley-{sid}.json"
    doc = json.loads(read_text(await download.path()))
    [session] = doc["sessions"]
    assert session["sessionId"] == sid
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "export me please"),
        ("assistant", "You said: export me please"),
    ]

    # the conversation menu of the top bar offers the same, for the open conversation
    if is_phone(page):
        await page.keyboard.press("Escape")  # closes the drawer
        await expect(page.get_by_test_id("sidebar")).to_be_hidden()
    await page.get_by_test_id("conversation-menu").click()
    async with page.expect_download() as md_download:
        await page.get_by_test_id("menu").get_by_test_id("menu-export-markdown").click()
    download = await md_download.value
    assert download.suggested_filename == f"parley-{sid}.md"
    text = read_text(await download.path())
    assert "# export me please" in text and "You said: export me please" in text


async def test_code_blocks_have_a_copy_button(serve: Any, sized: BrowserContext, tmp_path: Path) -> None:
    server = serve(chat=EchoChat())
    await sized.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = await open_app(sized, server.url)
    code = "print('copied from a code block')\nx = 1 < 2"
    await send(page, f"\n```python\n{code}\n```\n")
    reply = messages(page, "assistant")
    await expect(reply).to_have_attribute("data-status", "complete")

    button = content(reply).get_by_test_id("code-copy")
    await expect(button).to_have_count(1)
    await button.click()
    await expect(button).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == code
    await snap(page, tmp_path, "copied")
