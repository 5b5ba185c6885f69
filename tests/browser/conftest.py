"""A real chromium (Debian's, never a downloaded one) driving the web app of a real Parley server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, ViewportSize, async_playwright, expect

from tests.conftest import require_tool

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # getUserMedia answers at once with a fake microphone (a tone), no permission prompt.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # Spoken replies play without a click in the page (a real user has always clicked Send).
    "--autoplay-policy=no-user-gesture-required",
]


@asynccontextmanager
async def launch(
    profile: Path, *, microphone: Path | None = None, viewport: ViewportSize | None = None
) -> AsyncIterator[BrowserContext]:
    """One browser profile: its tabs share localStorage, so they share one conversation.

    `microphone`: a 48 kHz mono WAV the fake microphone plays in a loop (a tone without it).
    An uncaught exception in any of its pages fails the test.
    """
    executable = require_tool("chromium", "browser tests")
    args = [*CHROMIUM_ARGS]
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=args,
            viewport=viewport or {"width": 1280, "height": 800},
        )
        context.set_default_timeout(10_000)
        expect.set_options(timeout=10_000)
        uncaught: list[str] = []
        context.on("weberror", lambda error: uncaught.append(str(error.error)))
        try:
            yield context
        finally:
            await context.close()
        assert not uncaught, f"uncaught errors in the page: {uncaught}"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A browser with the default fake microphone (see `launch`)."""
    async with launch(tmp_path / "profile") as context:
        yield context
