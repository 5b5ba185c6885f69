"""Cloudflare mode on several nodes: the browser's pull of the assistant's voice works through any
node, and only for the browser session that speaks into the call. Two `parley serve` processes
share PostgreSQL, Redis and PARLEY_SECRET_KEY; the SFU is the `parley sfu` stand-in; the browser
is `SFUCaller` (aiortc, the twin of static/sfu.js) with its requests sent to either node."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import httpx
import pytest

from parley.standins.server import BackgroundServer
from parley.standins.sfu.app import create_app as create_sfu
from parley.standins.sfu.caller import CallerError, SFUCaller
from tests.cluster.conftest import Cluster, session_id, start_cluster
from tests.rtc.test_loopback import MicTrack

APP_ID = "parley-cluster"
APP_SECRET = "sfu-app-secret-of-the-cluster"


@pytest.fixture(scope="module")
def sfu() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_sfu(app_id=APP_ID, app_secret=APP_SECRET)) as server:
        yield server


@pytest.fixture(scope="module")
def sfu_cluster(tmp_path_factory: pytest.TempPathFactory, sfu: BackgroundServer) -> Iterator[Cluster]:
    extra = {
        "PARLEY_RTC": "cloudflare",
        "CLOUDFLARE_REALTIME_APP_ID": APP_ID,
        "CLOUDFLARE_REALTIME_APP_SECRET": APP_SECRET,
        "PARLEY_REALTIME_BASE_URL": f"{sfu.url}/v1",
        "PARLEY_SECRET_KEY": secrets.token_hex(32),
    }
    yield from start_cluster(tmp_path_factory.mktemp("sfu-cluster"), count=2, extra=extra)


def to(caller: SFUCaller, base_url: str) -> None:
    """The browser's next requests reach another node (as a balancer may send them)."""
    caller.http.base_url = httpx.URL(base_url)


async def test_the_voice_is_pulled_through_another_node_and_only_by_its_browser(
    sfu_cluster: Cluster,
) -> None:
    first, second = sfu_cluster[0], sfu_cluster[1]
    caller = SFUCaller(first.url, session_id("sfu-pull"), MicTrack())
    stranger = SFUCaller(second.url, session_id("sfu-other"), MicTrack())
    try:
        await caller.publish()
        await caller.start_call()  # the call (the assistant's SFU link) lives on node 1
        assert caller.voice is not None
        to(caller, second.url)
        await caller.pull_voice()  # node 2 allows it: node 1 recorded who may pull that voice
        voice = await asyncio.wait_for(caller.voice_tracks.get(), 15.0)
        assert voice.kind == "audio"

        # another browser session (signed in as the same user, even) may not pull that voice
        await stranger.publish()
        stranger.voice = caller.voice
        for node in (second, first):
            to(stranger, node.url)
            with pytest.raises(CallerError) as refused:
                await stranger.pull_voice()
            assert refused.value.status == 403
            assert "tracks.0.sessionId" in str(refused.value.body)

        # hung up through node 2: the voice is nobody's to pull any more, on either node
        await caller.hangup()
        for node in (first, second):
            to(caller, node.url)
            caller.pulled_mid = None
            with pytest.raises(CallerError) as gone:
                await caller.pull_voice()
            assert gone.value.status == 403
    finally:
        await caller.hangup()
        await caller.aclose()
        await stranger.aclose()
