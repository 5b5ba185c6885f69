"""Spoken replies and languages in a real chromium: read-aloud, auto-speak as the reply streams, CSP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, WebSocket, WebSocketRoute, expect

from parley.providers.espeak import EspeakTTS
from parley.providers.stt import AudioInput, STTProvider, Transcript
from parley.providers.testing import EchoChat
from parley.providers.unconfigured import UnconfiguredTTS
from tests.browser.test_app import RECORD_GROWTH, content, messages, open_app, record, send
from tests.conftest import require_tool

pytestmark = pytest.mark.browser

# Records what the app's <audio> element does, to prove that sound actually played.
WATCH_AUDIO = """() => {
  window.__audio = [];
  const audio = document.querySelector('[data-testid="speech-audio"]');
  for (const name of ["playing", "ended", "pause"]) {
    audio.addEventListener(name, () => window.__audio.push(name));
  }
}"""

# A spoken clip (not the moment of silence played on the first click) is sounding.
PLAYING_SPEECH = """() => {
  const audio = document.querySelector('[data-testid="speech-audio"]');
  return window.__audio.includes("playing") && !audio.paused && audio.currentTime > 0.2;
}"""

CSP_WATCH = """document.addEventListener("securitypolicyviolation", (e) => {
  (window.__csp ??= []).push(`${e.violatedDirective} ${e.blockedURI}`);
});"""


# Sends a message by clicking Send, and reports the <audio> element just before and just after.
SEND_NOW = """(text) => {
  const audio = document.querySelector('[data-testid="speech-audio"]');
  const look = () => ({ paused: audio.paused, src: audio.hasAttribute("src") });
  const before = look();
  const input = document.querySelector('[data-testid="input"]');
  input.value = text;
  input.dispatchEvent(new Event("input"));
  document.querySelector('[data-testid="send"]').click();
  return [before, look()];
}"""


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition on what the test recorded from the browser's events."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


def espeak() -> EspeakTTS:
    require_tool("espeak-ng", "spoken replies in the web app")
    return EspeakTTS()


def speak_requests(page: Page) -> list[dict[str, Any]]:
    """The JSON bodies of every POST /api/speak the page makes, in order."""
    bodies: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: bodies.append(r.post_data_json) if r.url.endswith("/api/speak") else None,
    )
    return bodies


def chat_frames(page: Page) -> list[dict[str, Any]]:
    """Every `chat` frame the page sends over its WebSocket (register before the page loads)."""
    frames: list[dict[str, Any]] = []

    def on_socket(ws: WebSocket) -> None:
        def sent(payload: str | bytes) -> None:
            frame = json.loads(payload)
            if frame.get("type") == "chat":
                frames.append(frame)

        ws.on("framesent", sent)

    page.on("websocket", on_socket)
    return frames


async def test_read_aloud_plays_the_reply(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat(token_interval=0.05), tts=espeak())
    page = await open_app(browser, server.url)
    await page.evaluate(WATCH_AUDIO)
    await send(page, "hello there, **my friend**")
    reply = messages(page, "assistant")
    await expect(reply).to_have_attribute("data-status", "complete")
    button = reply.get_by_test_id("read-aloud")

    async with page.expect_response("**/api/speak") as answer:
        await button.click()
    response = await answer.value
    assert response.ok
    assert response.headers["content-type"].startswith("audio/wav")
    assert response.headers["x-tts-provider"] == "espeak"
    # The markdown is gone: the voice reads what the bubble shows.
    assert response.request.post_data_json == {"text": "You said: hello there, my friend", "format": "wav"}
    await expect(button).to_have_attribute("aria-pressed", "true")
    await page.wait_for_function(PLAYING_SPEECH)
    await expect(page.get_by_test_id("stop")).to_be_visible()  # speech can be stopped from the composer

    await button.click()  # a second press stops it
    await expect(button).to_have_attribute("aria-pressed", "false")
    assert await page.evaluate("document.querySelector('[data-testid=\"speech-audio\"]').paused")
    await expect(page.get_by_test_id("stop")).to_be_hidden()

    # Played to the end, the button comes back by itself.
    await page.evaluate("window.__audio.length = 0")
    await button.click()
    await page.wait_for_function("() => window.__audio.includes('ended')", timeout=15_000)
    await expect(button).to_have_attribute("aria-pressed", "false")


async def test_auto_speak_speaks_each_sentence_while_the_reply_streams(
    serve: Any, browser: BrowserContext
) -> None:
    server = serve(chat=EchoChat(token_interval=0.15), tts=espeak())
    page = browser.pages[0]
    # One timeline, in the order the browser reported it: speak requests and the final reply.
    timeline: list[tuple[str, str]] = []
    page.on(
        "request",
        lambda r: (
            timeline.append(("speak", r.post_data_json["text"])) if r.url.endswith("/api/speak") else None
        ),
    )
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framereceived",
            lambda payload: (
                timeline.append(("reply", json.loads(payload)["response"]))
                if json.loads(payload).get("type") == "reply"
                else None
            ),
        ),
    )
    page = await open_app(browser, server.url)
    other = await open_app(browser, server.url)
    spoken_elsewhere = speak_requests(other)
    await page.get_by_test_id("auto-speak").check()
    await expect(other.get_by_test_id("auto-speak")).to_be_checked()  # the option is per browser
    await page.evaluate(WATCH_AUDIO)
    text = "Pi is about 3.14, e.g. in maths. Dr. Smith agrees! Does it sound right?"
    final = f"You said: {text}"

    await send(page, text)

    await expect(messages(page, "assistant")).to_have_attribute("data-status", "complete")
    await expect(content(messages(page, "assistant"))).to_have_text(final)
    await until(lambda: len([e for e in timeline if e[0] == "speak"]) == 4)
    spoken = [t for kind, t in timeline if kind == "speak"]
    assert spoken == [
        "You said:",
        "Pi is about 3.14, e.g. in maths.",
        "Dr. Smith agrees!",
        "Does it sound right?",
    ]
    assert " ".join(spoken) == final
    kinds = [kind for kind, _ in timeline]
    assert kinds.index("speak") < kinds.index("reply"), timeline  # spoken while still streaming
    assert kinds[-1] == "speak"  # the last sentence has no space after it: the reply ends it
    assert spoken_elsewhere == []  # only the tab that asked speaks

    # A new message silences the old reply at once (checked in the same task as the click).
    await page.wait_for_function(PLAYING_SPEECH)
    before, after = await page.evaluate(SEND_NOW, "Next.")
    assert before == {"paused": False, "src": True}
    assert after == {"paused": True, "src": False}
    await until(lambda: timeline[-1] == ("speak", "Next."))
    assert [t for kind, t in timeline if kind == "speak"][4:] == ["You said:", "Next."]


async def test_auto_speak_turns_itself_off_without_a_voice(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat(), tts=UnconfiguredTTS())  # /api/speak answers 503 not_configured
    page = await open_app(browser, server.url)
    await page.get_by_test_id("auto-speak").check()

    await send(page, "Say this. And this.")

    toast = page.get_by_test_id("toast")
    await expect(toast).to_contain_text("Spoken replies are off")
    await expect(page.get_by_test_id("auto-speak")).not_to_be_checked()
    await expect(toast).to_have_count(1)
    await expect(page.get_by_test_id("stop")).to_be_hidden()


class DetectingSTT(STTProvider):
    """Hears French unless told otherwise."""

    name = "detecting"

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> Transcript:
        return Transcript("bonjour", language or "fr")


async def test_language_goes_with_sends_and_speech(serve: Any, browser: BrowserContext) -> None:
    chat = EchoChat()
    server = serve(chat=chat, stt=DetectingSTT(), tts=espeak())
    page = browser.pages[0]
    frames = chat_frames(page)
    spoken = speak_requests(page)
    page = await open_app(browser, server.url)
    await expect(page.get_by_test_id("language")).to_have_value("")  # Auto

    # Auto: the language speech-to-text heard goes with the next send.
    await record(page)
    await expect(page.get_by_test_id("input")).to_have_value("bonjour")
    await page.get_by_test_id("send").click()
    await expect(messages(page, "assistant")).to_have_attribute("data-status", "complete")
    assert frames[-1]["language"] == "fr"
    assert "Reply in French" in chat.requests[-1].messages[0].content

    # Chosen: German for the chat frame, the model's prompt and the voice.
    await page.get_by_test_id("language").select_option("de")
    await send(page, "Guten Tag")
    reply = messages(page, "assistant").nth(1)
    await expect(reply).to_have_attribute("data-status", "complete")
    assert frames[-1]["language"] == "de"
    assert isinstance(frames[-1]["clientId"], str) and frames[-1]["clientId"]
    assert "Reply in German" in chat.requests[-1].messages[0].content
    async with page.expect_response("**/api/speak") as answer:
        await reply.get_by_test_id("read-aloud").click()
    assert (await answer.value).ok
    assert spoken[-1]["language"] == "de"
    assert spoken[-1]["text"] == "You said: Guten Tag"

    await page.reload()
    await expect(page.get_by_test_id("language")).to_have_value("de")


async def test_no_content_security_policy_violations(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat(), tts=espeak())
    page = browser.pages[0]
    await page.add_init_script(CSP_WATCH)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page = await open_app(browser, server.url)
    response = await page.request.get(server.url)
    assert "script-src 'self'" in response.headers["content-security-policy"]

    # A table's alignment (a style) and a spoken reply (a blob: URL) run under the policy too.
    await send(page, "| a | b |\n|---|--:|\n| 1 | 2 |")
    reply = messages(page, "assistant")
    await expect(reply).to_have_attribute("data-status", "complete")
    async with page.expect_response("**/api/speak"):
        await reply.get_by_test_id("read-aloud").click()
    await expect(reply.get_by_test_id("read-aloud")).to_have_attribute("aria-pressed", "true")

    assert [m for m in console if "Content Security Policy" in m] == []
    assert await page.evaluate("window.__csp ?? []") == []


SPLIT_CASES = [
    (
        "You said: Pi is about 3.14, e.g. in maths. Dr. Smith agrees! Does it sound right?",
        ["You said:", "Pi is about 3.14, e.g. in maths.", "Dr. Smith agrees!", "Does it sound right?"],
    ),
    (
        "Wait... what?! Yes; J. R. R. Tolkien wrote it.",
        ["Wait...", "what?!", "Yes;", "J. R. R. Tolkien wrote it."],
    ),
    ("# Steps\n1. Open it.\n2. **Close** it\n", ["Steps", "Open it.", "Close it"]),
    ("Run this:\n```python\nprint('x'); y = 1\n```\nDone.", ["Run this:", "Done."]),
    (
        "See https://example.com/a/b?c=1 or [the docs](https://x.example/). Ok",
        ["See example.com or the docs.", "Ok"],
    ),
    ("| a | b |\n|---|---|\n| 1 | 2 |", ["a, b", "1, 2"]),
    ("你好。今天天气很好！好吗？", ["你好。", "今天天气很好！", "好吗？"]),
    ("It costs 3. Then 4.5 more.", ["It costs 3.", "Then 4.5 more."]),
]


async def test_replies_split_into_sentences_as_they_stream(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat())
    page = await open_app(browser, server.url)
    results = await page.evaluate(
        """async (sources) => {
          const { SentenceSplitter } = await import("/static/sentences.js");
          return sources.map((source) => {
            const whole = new SentenceSplitter().push(source, true);
            // the same text one character at a time, as a stream would bring it
            const splitter = new SentenceSplitter();
            const streamed = [];
            for (let i = 1; i <= source.length; i++) streamed.push(...splitter.push(source.slice(0, i)));
            const beforeEnd = streamed.length;
            streamed.push(...splitter.push(source, true));
            return { whole, streamed, beforeEnd };
          });
        }""",
        [source for source, _ in SPLIT_CASES],
    )
    for (source, expected), result in zip(SPLIT_CASES, results, strict=True):
        assert result["whole"] == expected, source
        assert result["streamed"] == expected, source
        # everything but a last piece without a space after it is out before the stream ends
        assert result["beforeEnd"] >= len(expected) - 1, source


async def test_a_tab_joining_mid_reply_shows_it_once(serve: Any, browser: BrowserContext) -> None:
    server = serve(chat=EchoChat(token_interval=0.08))
    page = browser.pages[0]
    sockets: list[WebSocketRoute] = []

    def proxy(ws: WebSocketRoute) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    await page.route_web_socket("**/ws*", proxy)
    page = await open_app(browser, server.url)
    await page.evaluate(RECORD_GROWTH)
    text = " ".join(f"word{i}" for i in range(30))
    final = f"You said: {text}"

    await send(page, text)
    await expect(content(messages(page, "assistant"))).to_contain_text("word3")
    other = await open_app(browser, server.url)  # joins mid-reply: the text so far, then the rest
    await other.evaluate(RECORD_GROWTH)
    await expect(content(messages(other, "assistant"))).to_contain_text("word")
    await sockets[0].close(code=1001, reason="test: network blip")  # this tab rejoins mid-reply
    await expect(page.get_by_test_id("status")).not_to_have_attribute("data-state", "connected")
    await expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")

    for tab in (page, other):
        await expect(messages(tab, "assistant")).to_have_attribute("data-status", "complete")
        await expect(content(messages(tab, "assistant"))).to_have_text(final)
        seen: list[str] = await tab.evaluate("window.__seen")
        # never a repeated or restarted text: every state on screen was a beginning of the reply
        assert all(final.startswith(s) for s in seen if s), [s for s in seen if not final.startswith(s)]
    growing = await page.evaluate("window.__seen")
    assert len(sockets) == 2 and any(s and s != final for s in growing)
