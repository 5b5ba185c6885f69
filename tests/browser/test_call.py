"""Voice calls from the web app in a real chromium whose fake microphone plays espeak-ng speech.

The server is real end to end: aiortc peer, Silero (or webrtcvad) VAD, pocketsphinx with a
grammar (so the transcript is exact), EchoChat, espeak-ng speaking the reply back. The fake
microphone loops its WAV, so each file is speech then a long silence: one pass is one turn
within the test's window.
"""

from __future__ import annotations

import asyncio
import re
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.async_api import Page, expect

from parley.providers.espeak import EspeakTTS
from parley.providers.pocketsphinx import PocketSphinxSTT
from parley.providers.testing import EchoChat
from tests.audio import espeak_voiced
from tests.browser.conftest import launch
from tests.browser.test_app import content, history, messages, open_app
from tests.conftest import require_tool

pytestmark = pytest.mark.browser

RATE = 48000
NOISE = 0.003 * 32767
LIGHTS = "turn on the kitchen lights"
WEATHER = "what is the weather like today"
GRAMMAR = [LIGHTS, WEATHER, "play some music", "what time is it"]

# Wraps RTCPeerConnection so the test can read the call's WebRTC stats (the app keeps its
# connection private); the app's behaviour is unchanged.
TRACK_PEERS = """() => {
  const Native = window.RTCPeerConnection;
  window.__peers = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__peers.push(this); }
  };
}"""

# The loudest the assistant's voice was on this tab's remote track, from WebRTC's own stats.
INBOUND_AUDIO = """async () => {
  let energy = 0, level = 0, packets = 0;
  for (const pc of window.__peers) {
    if (pc.connectionState === "closed") continue;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        energy = Math.max(energy, s.totalAudioEnergy ?? 0);
        level = Math.max(level, s.audioLevel ?? 0);
        packets = Math.max(packets, s.packetsReceived ?? 0);
      }
    }
  }
  return {energy, level, packets};
}"""


def speech(text: str) -> np.ndarray:
    """espeak-ng saying `text`, 48 kHz mono float samples, trimmed to the voice."""
    return espeak_voiced(text, RATE).astype(np.float64)


def microphone(path: Path, parts: list[str | float]) -> Path:
    """A WAV of sentences (str) and silences (seconds), with faint noise: no microphone is exact zero."""
    pieces = [speech(p) if isinstance(p, str) else np.zeros(int(p * RATE)) for p in parts]
    audio = np.concatenate(pieces) + np.random.default_rng(11).normal(0.0, NOISE, sum(map(len, pieces)))
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(np.clip(audio, -32768, 32767).astype("<i2").tobytes())
    return path


def active_calls(base: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = re.search(r"^parley_voice_active_calls (\S+)$", text, re.M)
    assert found, "the active calls gauge is missing from /metrics"
    return float(found.group(1))


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def start_call(page: Page) -> None:
    await page.get_by_test_id("call").click()
    bar = page.get_by_test_id("callbar")
    await expect(bar).to_be_visible()
    await expect(bar).to_have_attribute("data-state", "live")


def voice_server(serve: Any, *, token_interval: float = 0.0) -> Any:
    require_tool("espeak-ng", "the reply is spoken with it")
    return serve(
        chat=EchoChat(token_interval=token_interval),
        stt=PocketSphinxSTT(grammar=GRAMMAR),
        tts=EspeakTTS(),
    )


async def test_a_spoken_question_is_answered_aloud_and_reaches_every_tab(serve: Any, tmp_path: Path) -> None:
    # Speech starts after the call is up (~1 s), then silence long enough for one turn.
    mic = microphone(tmp_path / "mic.wav", [2.0, LIGHTS, 8.0])
    server = voice_server(serve)
    reply = f"You said: {LIGHTS}"
    baseline = active_calls(server.url)
    async with launch(tmp_path / "profile", microphone=mic) as browser:
        other = await open_app(browser, server.url)
        page = await open_app(browser, server.url)
        await page.evaluate(TRACK_PEERS)

        await start_call(page)
        assert active_calls(server.url) == baseline + 1

        await expect(page.get_by_test_id("call-you")).to_contain_text(LIGHTS, timeout=15_000)
        await expect(page.get_by_test_id("call-assistant")).to_contain_text(reply)
        # The reply audio reached this tab's remote track, and it is not silence.
        await expect(page.get_by_test_id("call-latency")).to_have_text(re.compile(r"^reply in \d+\.\d\d s$"))
        for tab in (page, other):
            await expect(content(messages(tab, "user"))).to_have_text(LIGHTS)
            await expect(messages(tab, "assistant")).to_have_attribute("data-status", "complete")
            await expect(content(messages(tab, "assistant"))).to_have_text(reply)
        stats: dict[str, float] = {}
        for _ in range(60):
            stats = await page.evaluate(INBOUND_AUDIO)
            if stats["energy"] > 1e-3:
                break
            await asyncio.sleep(0.1)
        assert stats["energy"] > 1e-3 and stats["level"] > 0.01, stats

        assert [(m["role"], m["content"], m["status"]) for m in await history(page, server.url)] == [
            ("user", LIGHTS, "complete"),
            ("assistant", reply, "complete"),
        ]

        # Hang-up releases the server's peer and its pipeline.
        await page.get_by_test_id("hangup").click()
        await expect(page.get_by_test_id("callbar")).to_be_hidden()
        calls = server.app.state.services.calls
        await wait_for(lambda: len(calls) == 0)
        assert active_calls(server.url) == baseline
        await expect(page.get_by_test_id("toast")).to_have_count(0)
        assert await page.evaluate("window.__peers.every((pc) => pc.connectionState === 'closed')")


async def test_speaking_over_the_reply_interrupts_it(serve: Any, tmp_path: Path) -> None:
    # The reply is written slowly (~1 s) and then spoken (~2 s); the second question starts
    # 2 s after the first ends, while the reply is playing.
    mic = microphone(tmp_path / "mic.wav", [2.0, LIGHTS, 2.0, WEATHER, 8.0])
    server = voice_server(serve, token_interval=0.2)
    full = f"You said: {LIGHTS}"
    async with launch(tmp_path / "profile", microphone=mic) as browser:
        other = await open_app(browser, server.url)
        page = await open_app(browser, server.url)
        await start_call(page)

        assistant = page.get_by_test_id("call-assistant")
        await expect(assistant).to_have_attribute("data-mark", "interrupted", timeout=15_000)
        await expect(page.get_by_test_id("call-you")).to_contain_text(WEATHER)
        for tab in (page, other):
            first = messages(tab, "assistant").first
            await expect(first).to_have_attribute("data-status", "interrupted")
            await expect(first.get_by_test_id("interrupted")).to_be_visible()
        await page.get_by_test_id("hangup").click()

        turns = await history(page, server.url)
        assert [m["content"] for m in turns[:1]] == [LIGHTS]
        cut = turns[1]
        assert cut["role"] == "assistant" and cut["status"] == "interrupted"
        assert full.startswith(cut["content"]) and len(cut["content"]) < len(full), cut
        assert any(m["role"] == "user" and m["content"] == WEATHER for m in turns[2:])
        await wait_for(lambda: len(server.app.state.services.calls) == 0)
