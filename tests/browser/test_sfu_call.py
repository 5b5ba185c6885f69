"""Cloudflare mode end to end: chromium -> SFU stand-in -> the assistant's participant -> SFU -> chromium.

The same spoken turn as the direct-mode test (tests/browser/test_call.py), but the browser and
the assistant never connect to each other: both are participants of the `parley sfu` stand-in,
the browser reaching it only through Parley's /api/sfu endpoints. TURN credentials come from the
TURN key API stand-in. Every response Parley sends the browser (pages, scripts, API replies,
WebSocket frames) is searched for the app secret and the TURN key's token and id.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, Response, expect

from parley.providers.espeak import EspeakTTS
from parley.providers.pocketsphinx import PocketSphinxSTT
from parley.providers.testing import EchoChat
from parley.rtc.sfu_peer import Recovery
from parley.standins.server import BackgroundServer
from parley.standins.sfu.app import create_app as create_sfu
from tests.browser.conftest import launch
from tests.browser.test_app import content, history, messages, open_app
from tests.browser.test_call import (
    GRAMMAR,
    INBOUND_AUDIO,
    LIGHTS,
    TRACK_PEERS,
    active_calls,
    microphone,
    wait_for,
)
from tests.conftest import ServerFactory, make_settings, require_tool

pytestmark = pytest.mark.browser

APP_ID = "parley-e2e"
APP_SECRET = "SFU-APP-SECRET-7f3k-do-not-leak"
TURN_KEY_ID = "turn-key-id-e2e-9q2w"
TURN_TOKEN = "TURN-TOKEN-e2e-x81v-do-not-leak"
SECRETS = (APP_SECRET, TURN_TOKEN, TURN_KEY_ID)


@pytest.fixture
def sfu() -> Iterator[BackgroundServer]:
    """The SFU stand-in, also serving the TURN key API (one base URL, as on Cloudflare)."""
    app = create_sfu(app_id=APP_ID, app_secret=APP_SECRET, turn_key_id=TURN_KEY_ID, turn_token=TURN_TOKEN)
    with BackgroundServer(app) as server:
        yield server


def cloudflare_parley(serve: ServerFactory, tmp_path: Path, sfu: BackgroundServer) -> BackgroundServer:
    require_tool("espeak-ng", "the reply is spoken with it")
    settings = make_settings(
        tmp_path / "data",
        rtc="cloudflare",
        cloudflare_realtime_app_id=APP_ID,
        cloudflare_realtime_app_secret=APP_SECRET,
        cloudflare_turn_key_id=TURN_KEY_ID,
        cloudflare_turn_key_api_token=TURN_TOKEN,
        realtime_base_url=f"{sfu.url}/v1",
    )
    server = serve(settings=settings, chat=EchoChat(), stt=PocketSphinxSTT(grammar=GRAMMAR), tts=EspeakTTS())
    calls = server.app.state.services.calls
    calls.config = type(calls.config)(
        idle_seconds=calls.config.idle_seconds,
        voice=calls.config.voice,
        recovery=Recovery(media_timeout=1.0, backoff=0.2),
    )
    return server


class Recorder:
    """Every response body and WebSocket frame Parley sent to the browser's pages."""

    def __init__(self, context: BackgroundServer) -> None:
        self.base = context.url
        self.seen: list[tuple[str, str]] = []
        self._pending: list[asyncio.Task[None]] = []

    def watch(self, page: Page) -> None:
        page.on("response", lambda r: self._pending.append(asyncio.ensure_future(self._keep(r))))
        page.on("websocket", lambda ws: ws.on("framereceived", lambda p: self.seen.append((ws.url, str(p)))))

    async def _keep(self, response: Response) -> None:
        if not response.url.startswith(self.base):
            return
        headers = "\n".join(f"{k}: {v}" for k, v in (await response.all_headers()).items())
        try:
            body = (await response.body()).decode("utf-8", "replace")
        except Exception:  # a body the page discarded (a navigation away): headers still count
            body = ""
        self.seen.append((response.url, headers + "\n" + body))

    async def leaks(self) -> list[str]:
        await asyncio.gather(*self._pending, return_exceptions=True)
        return [f"{url} has {secret!r}" for url, text in self.seen for secret in SECRETS if secret in text]


async def start_call(page: Page) -> None:
    await page.get_by_test_id("call").click()
    bar = page.get_by_test_id("callbar")
    await expect(bar).to_have_attribute("data-state", "live", timeout=15_000)


async def loud_reply(page: Page) -> dict[str, float]:
    stats: dict[str, float] = {}
    for _ in range(100):
        stats = await page.evaluate(INBOUND_AUDIO)
        if stats["energy"] > 1e-3:
            break
        await asyncio.sleep(0.1)
    return stats


async def standin_sessions(sfu: BackgroundServer) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{sfu.url}/_standin/sessions", headers={"Authorization": f"Bearer {APP_SECRET}"})
    body = r.json()
    return list(body["sessions"] if isinstance(body, dict) else body)


async def test_a_spoken_turn_through_the_sfu_with_no_secret_in_any_response(
    serve: ServerFactory, tmp_path: Path, sfu: BackgroundServer
) -> None:
    mic = microphone(tmp_path / "mic.wav", [2.0, LIGHTS, 10.0])
    server = cloudflare_parley(serve, tmp_path, sfu)
    recorder = Recorder(server)
    reply = f"You said: {LIGHTS}"
    baseline = active_calls(server.url)
    async with launch(tmp_path / "profile", microphone=mic) as browser:
        other = await open_app(browser, server.url)
        page = await fresh_page(browser, recorder)
        await page.goto(server.url)
        await page.evaluate(TRACK_PEERS)

        await start_call(page)
        assert active_calls(server.url) == baseline + 1
        # Two participants at the SFU: the browser's session and the assistant's.
        assert len(await standin_sessions(sfu)) == 2

        await expect(page.get_by_test_id("call-you")).to_contain_text(LIGHTS, timeout=20_000)
        await expect(page.get_by_test_id("call-assistant")).to_contain_text(reply)
        await expect(page.get_by_test_id("call-latency")).to_have_text(re.compile(r"^reply in \d+\.\d\d s$"))
        for tab in (page, other):
            await expect(content(messages(tab, "user"))).to_have_text(LIGHTS)
            await expect(content(messages(tab, "assistant"))).to_have_text(reply)
        stats = await loud_reply(page)
        assert stats["energy"] > 1e-3 and stats["level"] > 0.01, stats
        assert [(m["role"], m["content"]) for m in await history(page, server.url)] == [
            ("user", LIGHTS),
            ("assistant", reply),
        ]

        await page.get_by_test_id("hangup").click()
        await expect(page.get_by_test_id("callbar")).to_be_hidden()
        calls = server.app.state.services.calls
        await wait_for(lambda: len(calls) == 0)
        assert active_calls(server.url) == baseline
        await expect(page.get_by_test_id("toast")).to_have_count(0)
        # The TURN API was really asked (for the browser and the assistant) ...
        assert len(sfu.app.state.requests) >= 2
        # ... and nothing that reached the browser carries a secret.
        assert await recorder.leaks() == []
        assert len(recorder.seen) > 10


async def test_the_browser_re_pulls_the_voice_after_the_assistant_recovers(
    serve: ServerFactory, tmp_path: Path, sfu: BackgroundServer
) -> None:
    # The fake microphone loops this file (~15 s): the question comes again after the recovery.
    mic = microphone(tmp_path / "mic.wav", [2.0, LIGHTS, 11.0])
    server = cloudflare_parley(serve, tmp_path, sfu)
    async with launch(tmp_path / "profile", microphone=mic) as browser:
        page = await open_app(browser, server.url)
        await page.evaluate(TRACK_PEERS)
        await start_call(page)
        await expect(page.get_by_test_id("call-assistant")).to_contain_text(LIGHTS, timeout=20_000)

        before = set(await page.evaluate(INBOUND_STREAMS))
        peer = next(iter(server.app.state.services.calls._peers.values()))
        dropped = peer.session_id
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{sfu.url}/_standin/sessions/{dropped}/drop",
                headers={"Authorization": f"Bearer {APP_SECRET}"},
            )
        assert r.status_code in (200, 204), r.text
        await wait_for(lambda: peer.recoveries == 1, timeout=10.0)
        assert peer.session_id != dropped
        await expect(page.get_by_test_id("callbar")).to_have_attribute(
            "data-who", re.compile("listening|you")
        )

        # The next pass of the microphone is a second turn, answered aloud on the new session: the
        # voice arrives on a stream this tab pulled after the recovery.
        await expect(messages(page, "assistant")).to_have_count(2, timeout=25_000)
        await expect(messages(page, "assistant").nth(1)).to_have_attribute("data-status", "complete")
        await wait_for_async(lambda: new_loud_stream(page, before), timeout=10.0)
        await page.get_by_test_id("hangup").click()
        await wait_for(lambda: len(server.app.state.services.calls) == 0)


# Energy of each audio stream this tab receives, by the stream's id in WebRTC's stats.
INBOUND_STREAMS = """async () => {
  const out = {};
  for (const pc of window.__peers) {
    if (pc.connectionState === "closed") continue;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === "inbound-rtp" && s.kind === "audio") out[s.id] = s.totalAudioEnergy ?? 0;
    }
  }
  return out;
}"""


async def new_loud_stream(page: Page, before: set[str]) -> bool:
    streams: dict[str, float] = await page.evaluate(INBOUND_STREAMS)
    return any(energy > 1e-3 for sid, energy in streams.items() if sid not in before)


async def wait_for_async(check: Any, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def fresh_page(browser: BrowserContext, recorder: Recorder) -> Page:
    page = await browser.new_page()
    recorder.watch(page)
    return page
