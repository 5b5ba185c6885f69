"""The web app in a real chromium against a real Parley: streaming, tabs, safety, stop, clear, voice."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Locator, Page, WebSocketRoute, expect

from parley.errors import ProviderUnavailable
from parley.providers.stt import AudioInput, STTProvider, Transcript
from parley.providers.testing import EchoChat

pytestmark = pytest.mark.browser

# Records every text an assistant bubble showed, to prove the reply grew in steps.
RECORD_GROWTH = """() => {
  window.__seen = [];
  const list = document.querySelector('[data-testid="message-list"]');
  new MutationObserver(() => {
    for (const el of list.querySelectorAll('[data-role="assistant"] [data-testid="message-content"]')) {
      window.__seen.push(el.textContent);
    }
  }).observe(list, {childList: true, subtree: true, characterData: true});
}"""


async def open_app(context: BrowserContext, url: str, *, connected: bool = True) -> Page:
    """A tab on the app; by default wait until its WebSocket is up."""
    blank = [p for p in context.pages if p.url == "about:blank"]
    page = blank[0] if blank else await context.new_page()
    await page.goto(url)
    if connected:
        await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    return page


def messages(page: Page, role: str | None = None) -> Locator:
    selector = '[data-testid="message"]' + (f'[data-role="{role}"]' if role else "")
    return page.locator(selector)


def content(message: Locator) -> Locator:
    return message.get_by_test_id("message-content")


async def send(page: Page, text: str) -> None:
    await page.get_by_test_id("input").fill(text)
    await page.get_by_test_id("send").click()


async def session_id(page: Page) -> str:
    value = await page.evaluate("localStorage.getItem('chatSessionId')")
    assert isinstance(value, str) and value.startswith("session-")
    return value


async def history(page: Page, base: str) -> list[dict[str, Any]]:
    response = await page.request.get(f"{base}/api/history?sessionId={await session_id(page)}")
    assert response.ok
    body: dict[str, Any] = await response.json()
    return body["messages"]


async def test_reply_streams_in_and_reaches_every_tab(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat(token_interval=0.05))
    page = await open_app(browser, server.url)
    other = await open_app(browser, server.url)
    await page.evaluate(RECORD_GROWTH)
    text = "hello there, this reply should arrive one word at a time"
    final = f"You said: {text}"

    await send(page, text)

    for tab in (page, other):
        await expect(content(messages(tab, "user"))).to_have_text(text)
        reply = messages(tab, "assistant")
        await expect(reply).to_have_attribute("data-status", "complete")
        await expect(content(reply)).to_have_text(final)
        await expect(messages(tab)).to_have_count(2)
    seen: list[str] = await page.evaluate("window.__seen")
    assert any(s and s != final and final.startswith(s) for s in seen), seen
    await expect(page.get_by_test_id("input")).to_have_value("")
    await expect(page.get_by_test_id("stop")).to_be_hidden()

    # A reload shows the same conversation from history, once.
    await other.reload()
    await expect(content(messages(other, "assistant"))).to_have_text(final)
    await expect(messages(other)).to_have_count(2)


async def test_markup_in_messages_stays_text(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    payload = (
        '<img src=x onerror="window.__xss=1"> **bold** [x](javascript:alert(1)) '
        "<script>window.__xss=2</script> [ok](https://example.com/)"
    )

    await send(page, payload)

    reply = messages(page, "assistant")
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(content(reply).locator("strong")).to_have_text("bold")
    await expect(content(reply)).to_contain_text('<img src=x onerror="window.__xss=1">')
    await expect(content(reply)).to_contain_text("[x](javascript:alert(1))")
    await expect(content(messages(page, "user"))).to_have_text(payload)
    link = content(reply).locator("a")
    await expect(link).to_have_count(1)
    await expect(link).to_have_attribute("href", "https://example.com/")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    await expect(link).to_have_attribute("target", "_blank")
    listing = page.get_by_test_id("message-list")
    assert await listing.locator("img, script, [onerror]").count() == 0
    assert await page.locator('a[href^="javascript" i]').count() == 0
    assert await page.evaluate("window.__xss") is None
    assert dialogs == []


LINK = 'rel="noopener noreferrer" target="_blank"'
MARKDOWN_CASES = [
    (
        "# Title\nSome *em*, **strong**, ***both***, ~~gone~~.",
        "<h1>Title</h1><p>Some <em>em</em>, <strong>strong</strong>, <strong><em>both</em></strong>, "
        "<del>gone</del>.</p>",
    ),
    ("snake_case and 2 * 3 * 4", "<p>snake_case and 2 * 3 * 4</p>"),
    ("one\ntwo\n\nthree", "<p>one<br>two</p><p>three</p>"),
    ("- a\n- b\n  - c\n- d", "<ul><li>a</li><li>b<ul><li>c</li></ul></li><li>d</li></ul>"),
    ("3. x\n4. y", '<ol start="3"><li>x</li><li>y</li></ol>'),
    (
        "```js\nif (a < b) {}\n```",
        '<pre data-lang="js"><code class="language-js">if (a &lt; b) {}</code></pre>',
    ),
    ("```\nstill streaming", "<pre><code>still streaming</code></pre>"),
    ("> **q**\n> r", "<blockquote><p><strong>q</strong><br>r</p></blockquote>"),
    ("`<b>` and ``a`b``", "<p><code>&lt;b&gt;</code> and <code>a`b</code></p>"),
    (
        "[a](https://a.example/) [b](JavaScript:x) [c](/rel) [d](data:text/html,x) [e](mailto:e@x.org)",
        f'<p><a href="https://a.example/" {LINK}>a</a> [b](JavaScript:x) [c](/rel) [d](data:text/html,x) '
        f'<a href="mailto:e@x.org" {LINK}>e</a></p>',
    ),
    (
        "see https://x.example/p?q=1. or <https://y.example/>",
        f'<p>see <a href="https://x.example/p?q=1" {LINK}>https://x.example/p?q=1</a>. or '
        f'<a href="https://y.example/" {LINK}>https://y.example/</a></p>',
    ),
    ("![pic](https://x.example/p.png)", f'<p><a href="https://x.example/p.png" {LINK}>pic</a></p>'),
    (
        "| a | b |\n|---|--:|\n| 1 | 2 |",
        '<div class="table-wrap"><table><thead><tr><th>a</th><th style="text-align: right;">b</th>'
        '</tr></thead><tbody><tr><td>1</td><td style="text-align: right;">2</td></tr></tbody></table></div>',
    ),
    ("**open and *open", "<p>**open and *open</p>"),
    ("\\*literal\\*", "<p>*literal*</p>"),
    ("<svg onload=alert(1)>", "<p>&lt;svg onload=alert(1)&gt;</p>"),
]


async def test_markdown_renders_to_the_expected_nodes(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url)
    rendered = await page.evaluate(
        """async (sources) => {
          const { renderMarkdown } = await import("/static/markdown.js");
          return sources.map((source) => {
            const box = document.createElement("div");
            box.append(renderMarkdown(source));
            return box.innerHTML;
          });
        }""",
        [source for source, _ in MARKDOWN_CASES],
    )
    assert list(zip(rendered, (html for _, html in MARKDOWN_CASES), strict=True)) == [
        (html, html) for _, html in MARKDOWN_CASES
    ]


async def test_stop_cancels_the_reply(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat(token_interval=0.3))
    page = await open_app(browser, server.url)
    text = " ".join(f"word{i}" for i in range(60))

    await send(page, text)
    reply = messages(page, "assistant")
    await expect(content(reply)).to_contain_text("You said:")
    await page.get_by_test_id("stop").click()

    await expect(reply).to_have_attribute("data-status", "cancelled")
    await expect(reply).to_contain_text("Stopped")
    await expect(page.get_by_test_id("stop")).to_be_hidden()
    stored = await history(page, server.url)
    assert [m["status"] for m in stored] == ["complete", "cancelled"]
    assert f"You said: {text}".startswith(stored[1]["content"])
    assert stored[1]["content"] != f"You said: {text}"
    await expect(content(reply)).to_have_text(stored[1]["content"])


async def test_clear_empties_every_tab(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url)
    other = await open_app(browser, server.url)
    await send(page, "remember this")
    for tab in (page, other):
        await expect(messages(tab, "assistant")).to_have_attribute("data-status", "complete")

    await other.get_by_test_id("clear").click()
    await other.get_by_test_id("confirm-ok").click()  # clearing asks first

    for tab in (page, other):
        await expect(messages(tab)).to_have_count(0)
        await expect(tab.get_by_text("What's on your mind?")).to_be_visible()
    assert await history(page, server.url) == []


async def test_new_chat_leaves_other_tabs_on_theirs(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url)
    other = await open_app(browser, server.url)
    await send(page, "in the old chat")
    await expect(messages(other)).to_have_count(2)
    old = await session_id(page)

    await page.get_by_test_id("new-chat").click()

    await expect(messages(page)).to_have_count(0)
    assert await session_id(page) != old
    await send(page, "in the new chat")
    await expect(content(messages(page, "assistant"))).to_have_text("You said: in the new chat")
    # tabs are independent (each follows its address, /c/<id>): the other one keeps the old chat
    await expect(content(messages(other, "user"))).to_have_text("in the old chat")
    await expect(messages(other)).to_have_count(2)
    assert other.url.endswith(f"/c/{old}")


async def test_reconnects_and_catches_up(serve: Any, browser: BrowserContext) -> None:
    first = serve(chat=EchoChat())
    page = await open_app(browser, first.url)
    await send(page, "before the restart")
    await expect(messages(page, "assistant")).to_have_attribute("data-status", "complete")
    sid = await session_id(page)

    first.stop()
    status = page.get_by_test_id("status")
    await expect(status).to_have_attribute("data-state", re.compile("reconnecting|offline"))
    # While the tab is away, another client talks in the same conversation (same data directory).
    elsewhere = serve(chat=EchoChat())
    response = await page.request.post(
        f"{elsewhere.url}/api/chat", data={"message": "while you were away", "sessionId": sid}
    )
    assert response.ok
    elsewhere.stop()
    serve(chat=EchoChat(), port=first.port)

    await expect(status).to_have_attribute("data-state", "connected")
    await expect(messages(page)).to_have_count(4)
    await expect(content(messages(page, "assistant").nth(1))).to_have_text("You said: while you were away")


async def test_sends_over_http_while_the_socket_is_down(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat(token_interval=0.02))

    async def refuse(ws: WebSocketRoute) -> None:
        await ws.close(code=1011, reason="test: no sockets")

    page = browser.pages[0]
    await page.route_web_socket("**/ws*", refuse)
    page = await open_app(browser, server.url, connected=False)
    await expect(page.get_by_test_id("status")).not_to_have_attribute("data-state", "connected")

    await send(page, "over plain http")

    reply = messages(page, "assistant")
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(content(reply)).to_have_text("You said: over plain http")
    await expect(messages(page)).to_have_count(2)


async def test_errors_show_in_a_dismissable_toast(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url)
    too_long = "x" * 8001

    await page.get_by_test_id("input").fill(too_long)
    await page.get_by_test_id("send").click()

    toast = page.get_by_test_id("toast")
    await expect(toast).to_contain_text("longer than 8000 characters")
    await expect(page.get_by_test_id("input")).to_have_value(too_long)  # the draft comes back
    await toast.get_by_role("button", name="Dismiss").click()
    await expect(toast).to_have_count(0)


class ScriptedSTT(STTProvider):
    name = "scripted"

    def __init__(self) -> None:
        self.calls: list[tuple[AudioInput, str | None]] = []
        self.fail = False

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        self.calls.append((audio, language))
        if self.fail:
            raise ProviderUnavailable("speech model is down")
        return Transcript("hello from the microphone", language or "en")


async def record(page: Page) -> None:
    mic = page.get_by_test_id("mic")
    await mic.click()
    await expect(mic).to_have_attribute("aria-pressed", "true")
    await page.wait_for_timeout(600)
    await mic.click()


async def test_voice_input_fills_or_sends(serve: Any, browser: BrowserContext) -> None:
    stt = ScriptedSTT()
    server = serve(chat=EchoChat(), stt=stt)
    page = await open_app(browser, server.url)
    await page.get_by_test_id("language").select_option("de")

    await record(page)
    await expect(page.get_by_test_id("input")).to_have_value("hello from the microphone")
    audio, language = stt.calls[0]
    assert audio.filename == "recording.webm" and audio.content_type == "audio/webm"
    assert language == "de"
    await expect(messages(page)).to_have_count(0)

    await page.get_by_test_id("input").fill("")
    await page.get_by_test_id("auto-send").check()
    await record(page)
    await expect(content(messages(page, "assistant"))).to_have_text("You said: hello from the microphone")
    await expect(page.get_by_test_id("input")).to_have_value("")

    stt.fail = True
    await record(page)
    await expect(page.get_by_test_id("toast")).to_contain_text("Transcription failed: speech model is down")


async def test_fits_a_phone_and_both_themes(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url)
    await send(
        page,
        "\nHere is **markdown** with `inline code`:\n\n"
        "- a bullet\n- another one\n\n"
        "```python\nprint('a long line of code that must scroll inside its block, not the page')\n```\n\n"
        "| column | another column | a third column |\n|---|---|---|\n| 1 | 2 | 3 |\n\n"
        "> a quote\n\nhttps://example.com/a/very/long/address/that/has/to/wrap/somewhere/abcdefghijklmnop",
    )
    await expect(messages(page, "assistant")).to_have_attribute("data-status", "complete")
    await send(page, "Thanks! And a second, shorter question?")
    await expect(messages(page, "assistant").nth(1)).to_have_attribute("data-status", "complete")

    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        suffix = "" if scheme == "light" else "-dark"
        await page.set_viewport_size({"width": 375, "height": 740})
        width = await page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 375
        for testid in ("send", "mic", "clear", "new-chat"):
            box = await page.get_by_test_id(testid).bounding_box()
            assert box and box["width"] >= 40 and box["height"] >= 40, testid
        await page.screenshot(path=f"/tmp/parley-mobile{suffix}.png", animations="disabled")
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.screenshot(path=f"/tmp/parley-desktop{suffix}.png", animations="disabled")

    # The toggle overrides the system theme, and the choice survives a reload.
    await page.emulate_media(color_scheme="light")
    await page.get_by_test_id("theme-toggle").click()
    await page.reload()
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
