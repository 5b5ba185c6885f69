"""Edit and resend, and regenerate, in a real chromium against a real Parley, at desktop and phone sizes.

"Edit" on a user message opens an editor; its text is sent with `editOf`, so that message and every
later one leave the conversation (in storage too, and in another tab at once). "Regenerate" on the
last reply asks its question again in its place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, expect

from parley.providers.testing import EchoChat
from tests.browser.test_app import content, messages, open_app
from tests.browser.test_conversations import exchange, snap, url_session
from tests.browser.test_conversations import sized as sized  # the fixture

pytestmark = pytest.mark.browser


async def stored(page: Page, base: str) -> list[tuple[int, str, str]]:
    response = await page.request.get(f"{base}/api/history?sessionId={url_session(page)}")
    assert response.ok
    return [(m["id"], m["role"], m["content"]) for m in (await response.json())["messages"]]


async def shown(page: Page) -> list[str]:
    texts: list[str] = await messages(page).get_by_test_id("message-content").all_inner_texts()
    return texts


async def test_edit_replaces_the_later_turns_everywhere(
    serve: Any, sized: BrowserContext, tmp_path: Path
) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(sized, server.url)
    await exchange(page, "first question")
    await exchange(page, "second question")
    other = await open_app(sized, page.url)  # the same conversation in a second tab
    await expect(messages(other)).to_have_count(4)
    shots = [await snap(page, tmp_path, "before")]

    # only the last reply offers Regenerate; every user message offers Edit
    replies = messages(page, "assistant")
    await expect(replies.nth(0).get_by_test_id("regenerate")).to_be_hidden()
    await expect(replies.nth(1).get_by_test_id("regenerate")).to_be_visible()
    await expect(messages(page, "user").get_by_test_id("edit")).to_have_count(2)

    # Escape leaves the editor without sending anything, and focus goes back to Edit
    first = messages(page, "user").nth(0)
    await first.get_by_test_id("edit").click()
    field = page.get_by_test_id("edit-input")
    await expect(field).to_be_focused()
    await expect(field).to_have_value("first question")
    await field.press("Escape")
    await expect(page.get_by_test_id("message-editor")).to_have_count(0)
    await expect(first.get_by_test_id("edit")).to_be_focused()
    assert len(await stored(page, server.url)) == 4

    await first.get_by_test_id("edit").click()
    await expect(field).to_be_focused()
    shots.append(await snap(page, tmp_path, "editing"))
    await field.fill("first question, edited")
    await field.press("Enter")

    edited = ["first question, edited", "You said: first question, edited"]
    for tab in (page, other):
        await expect(messages(tab)).to_have_count(2)
        await expect(messages(tab, "assistant")).to_have_attribute("data-status", "complete")
        assert await shown(tab) == edited
    assert [(role, text) for _, role, text in await stored(page, server.url)] == [
        ("user", edited[0]),
        ("assistant", edited[1]),
    ]
    shots.append(await snap(page, tmp_path, "edited"))
    assert len(set(shots)) == len(shots), "two states looked the same"


async def test_regenerate_asks_the_last_question_again(
    serve: Any, sized: BrowserContext, tmp_path: Path
) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(sized, server.url)
    await exchange(page, "keep this one")
    await exchange(page, "ask me again")
    before = await stored(page, server.url)
    last = messages(page, "assistant").last
    old_id = await last.get_attribute("data-id")

    await last.get_by_test_id("regenerate").click()

    # a new reply (a new id) to the same question, in the old one's place
    reply = messages(page, "assistant").last
    await expect(reply).not_to_have_attribute("data-id", old_id or "")
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(content(reply)).to_have_text("You said: ask me again")
    await expect(messages(page)).to_have_count(4)
    after = await stored(page, server.url)
    assert [(role, text) for _, role, text in after] == [(role, text) for _, role, text in before]
    assert after[:2] == before[:2]  # the turn before is untouched
    assert after[2][0] > before[3][0] and after[3][0] > after[2][0]  # the last turn is a new one
    await expect(reply.get_by_test_id("regenerate")).to_be_visible()
    await snap(page, tmp_path, "regenerated")
