"""The markdown renderer on hostile replies, in a real chromium: it returns, the tab lives.

Each render's time is printed (run with -s to see it), never asserted: the inputs are the ones that
crashed the tab or took seconds before the renderer bounded nesting and made every scan linear.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import BrowserContext, expect

from parley.providers.testing import EchoChat
from tests.browser.test_app import content, messages, open_app, session_id

pytestmark = pytest.mark.browser

#: markdown.js's MAX_DEPTH for quotes and lists, and as much again for emphasis and links inside
NESTING = 16

ADVERSARIAL = {
    "'>' x 3000": ">" * 3000,
    "'>' x 5000": ">" * 5000,
    "'> ' lines x 3000 deep": "\n".join("> " * k + "a" for k in range(1, 3000, 100)),
    "'_a _' x 10,000": "_a _" * 10_000,
    "'[' x 20,000": "[" * 20_000,
    "2,000-level nested list": "\n".join("  " * k + "- a" for k in range(2_000)),
    "nested emphasis x 5000": "*a " * 5_000 + "a* " * 5_000,
    "'**a ' x 10,000": "**a " * 10_000,
    "'~~a ' x 10,000": "~~a " * 10_000,
    "backtick runs 1..300": " ".join("`" * k for k in range(1, 300)),
    "'[a](' x 5000": "[a](" * 5_000,
    "'[a](<' x 5000": "[a](<" * 5_000,
    "'[a](x \"' x 5000": '[a](x "' * 5_000,
    "'<http:x' x 5000": "<http:x" * 5_000 + ">",
    "'http://' x 10,000": "http://" * 10_000,
    "URL with 20,000 dots": "see http://a" + "." * 20_000 + "b",
    "heading with 50,000 spaces": "# a" + " " * 50_000 + "b",
    "fence with a stray backtick": "```" + "a" * 50_000 + "`",
    "rule with a stray letter": "- " * 20_000 + "x",
    "table 1000 columns x 1000 rows": "|a" * 1_000 + "|\n" + "|-" * 1_000 + "|\n" + "|\n" * 1_000,
    "table rule 10,000 cells": "a|b\n" + "|-" * 10_000 + "x",
    "line of 50,000 spaces then a break": "a" + " " * 50_000 + "a\nb",
    "100,000 line breaks": "a\n" * 100_000,
    "100,000 list items, blank-separated": "- a\n\n" * 100_000,
    "code span padded with 50,000 chars": "` " + "a" * 50_000 + "`",
}

RENDER = """async (source) => {
  const { renderMarkdown } = await import("/static/markdown.js");
  const started = performance.now();
  const box = document.createElement("div");
  box.append(renderMarkdown(source));
  const ms = performance.now() - started;
  let deepest = 0;
  const walk = (node, depth) => {
    deepest = Math.max(deepest, depth);
    for (const child of node.children) walk(child, depth + 1);
  };
  walk(box, 0);
  return { ms, deepest, text: box.textContent.length };
}"""


async def test_adversarial_markdown_renders_and_the_tab_lives(serve: Any, browser: BrowserContext) -> None:
    # One tab for all of them: each must leave it alive for the next.
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url, connected=False)
    for name, source in ADVERSARIAL.items():
        result = await page.evaluate(RENDER, source)

        print(f"\nmarkdown render of {name} ({len(source):,} chars): {result['ms']:.1f} ms")
        # Something shows (markers past the bound are text) and nothing nests past the bounds.
        assert result["text"] > 0, name
        assert result["deepest"] <= 2 * NESTING + 4, (name, result)
        assert await page.evaluate("1 + 1") == 2  # the tab is alive


async def test_a_stored_hostile_reply_loads_with_its_session(serve: Any, browser: BrowserContext) -> None:
    # The reply that crashed the tab live, and on every later load of its session.
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url)
    sid = await session_id(page)
    response = await page.request.post(
        f"{server.url}/api/chat", data={"message": "x\n" + ">" * 3000, "sessionId": sid}
    )
    assert response.ok

    await page.reload()
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    reply = messages(page, "assistant")
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(content(reply)).to_contain_text(">" * 100)
    assert await page.evaluate("1 + 1") == 2
