"""The sidebar's Import button in a real chromium against a real Parley, at desktop and phone sizes.

A file picked in the browser's own file chooser is posted to /api/import: a Parley JSON export
becomes new conversations in the list, a malformed file shows the API's message and imports nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, expect

from parley.providers.testing import EchoChat
from tests.browser.test_app import content, messages, open_app
from tests.browser.test_conversations import api_sessions, listed, sidebar, snap
from tests.browser.test_conversations import sized as sized  # the fixture

pytestmark = pytest.mark.browser

EXPORT = {
    "sessions": [
        {
            "title": "Imported about gardens",
            "messages": [
                {"role": "user", "content": "how deep do tulips go?"},
                {"role": "assistant", "content": "About 15 cm, pointy end up."},
            ],
        },
        {
            "title": "Imported about bread",
            "messages": [{"role": "user", "content": "why does dough rise?"}],
        },
    ]
}


async def pick(page: Page, path: Path) -> None:
    """Click Import and choose `path` in the file chooser it opens."""
    await sidebar(page)
    async with page.expect_file_chooser() as chooser:
        await page.get_by_test_id("import-button").click()
    await (await chooser.value).set_files(str(path))


async def test_import_a_parley_export_and_refuse_a_malformed_file(
    serve: Any, sized: BrowserContext, tmp_path: Path
) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(sized, server.url)

    broken = tmp_path / "broken.json"
    broken.write_text('{"sessions": [', encoding="utf-8")
    await pick(page, broken)
    toast = page.get_by_test_id("toast")
    await expect(toast).to_contain_text("Could not import broken.json: body is not valid JSON")
    await expect(page.get_by_test_id("import-button")).to_be_focused()
    shots = [await snap(page, tmp_path, "malformed")]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        json.dumps({"sessions": [{"messages": [{"role": "robot", "content": "x"}]}]}), encoding="utf-8"
    )
    await pick(page, wrong)
    await expect(toast.filter(has_text="wrong.json")).to_contain_text(
        "sessions[0].messages[0].role must be user or assistant"
    )
    assert await api_sessions(page, server.url) == []
    await expect(listed(page)).to_have_count(0)
    for _ in range(2):  # read: out of the way (on a phone they cover the drawer's top)
        await toast.first.get_by_role("button", name="Dismiss").click()
    await expect(toast).to_have_count(0)

    export = tmp_path / "export.json"
    export.write_text(json.dumps(EXPORT), encoding="utf-8")
    await pick(page, export)
    await expect(page.get_by_test_id("notice")).to_have_text("Imported 2 conversations from export.json.")
    await expect(listed(page)).to_have_text(["Imported about bread", "Imported about gardens"])
    stored = {s["title"]: s["messageCount"] for s in await api_sessions(page, server.url)}
    assert stored == {"Imported about gardens": 2, "Imported about bread": 1}
    shots.append(await snap(page, tmp_path, "imported"))
    await page.get_by_test_id("notice").get_by_role("button", name="Dismiss").click()

    # an imported conversation opens like any other
    await sidebar(page)
    await listed(page).filter(has_text="gardens").click()
    await expect(content(messages(page, "assistant"))).to_have_text("About 15 cm, pointy end up.")
    assert shots[0] != shots[1]
