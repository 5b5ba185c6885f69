"""Cloudflare mode's added latency: end of speech -> first reply audio at the caller, through the
SFU stand-in against the direct path, on loopback, in one run.

    .venv/bin/python bench/sfu.py [--quick]      (also part of `make bench`)

One Parley server with PARLEY_RTC=cloudflare (so both /api/offer and /api/sfu answer), the voice
bench's scenario (`voice_common.py`: espeak-ng speech in real time, STT 100 ms, LLM 200 ms + 30
tok/s, TTS 100 ms, Silero with a 0.2 s stop) and the `parley sfu` stand-in, each on uvicorn in a
thread of this process; aiortc callers on this process's loop. Calls alternate direct / SFU, one
at a time, so both paths see the same machine. The SFU path adds a relay hop (the stand-in
decodes and re-encodes Opus, as its docstring says; Cloudflare forwards packets) each way and
the callers' jitter buffers on both hops; the ratio says what that costs here, not on
Cloudflare's network. Prints markdown; always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

import voice_client
from voice_common import (
    AUDIBLE_RMS,
    FIRST_TOKEN,
    STOP_SECS,
    STT_DELAY,
    TOKEN_INTERVAL,
    TRANSCRIPT,
    TTS_FIRST_BYTE,
    TTS_SECS_PER_CHAR,
    percentile,
    speech,
    timeline,
)

APP_ID, APP_SECRET = "bench", "bench-sfu-secret"
#: (calls per path, turns per call)
FULL, QUICK = (4, 5), (2, 3)


def parley_app(tmp: Path, sfu_url: str) -> Any:
    from parley.app import create_app
    from parley.config import Settings
    from parley.providers.testing import EchoChat
    from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp,
        llm="none",
        stt="none",
        vad="silero",
        vad_stop_secs=STOP_SECS,
        log_level="WARNING",
        model_base_url="http://127.0.0.1:9",
        rtc="cloudflare",
        cloudflare_realtime_app_id=APP_ID,
        cloudflare_realtime_app_secret=APP_SECRET,
        realtime_base_url=f"{sfu_url}/v1",
    )
    return create_app(
        settings,
        chat=EchoChat(first_token_delay=FIRST_TOKEN, token_interval=TOKEN_INTERVAL),
        stt=FixedLatencySTT(delay=STT_DELAY, text=TRANSCRIPT),
        tts=FixedLatencyTTS(first_byte=TTS_FIRST_BYTE, secs_per_char=TTS_SECS_PER_CHAR),
    )


async def one_call(url: str, path: str, index: int, voice: np.ndarray, turns: int) -> list[float]:
    """One call on `path` ("direct" or "sfu"); ms from each true end of speech to the first audible
    reply frame the caller decoded."""
    import httpx
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    from parley.standins.sfu.caller import SFUCaller

    heard = voice_client.Heard()
    gate = asyncio.Event()
    mic = voice_client.mic_track(timeline(voice, turns, 0), heard, [], gate)
    readers: list[asyncio.Task[None]] = []

    async def listen(track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if np.sqrt(np.mean(frame.to_ndarray().astype(np.float64) ** 2)) > AUDIBLE_RMS:
                heard.packets.append(time.perf_counter())

    session = f"bench-{path}-{index}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        caller: SFUCaller | None = None
        pc: RTCPeerConnection
        call_id = ""
        if path == "direct":
            pc = RTCPeerConnection()
            pc.addTrack(mic)
            pc.on("track", lambda t: readers.append(asyncio.create_task(listen(t))))
            await pc.setLocalDescription(await pc.createOffer())
            r = await http.post(
                "/api/offer", json={"sdp": pc.localDescription.sdp, "type": "offer", "sessionId": session}
            )
            r.raise_for_status()
            call_id = r.json()["callId"]
            await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))
        else:
            caller = SFUCaller(url, session, mic)
            pc = caller.pc
            await caller.connect()
            call_id = caller.call_id or ""
            readers.append(asyncio.create_task(listen(await caller.voice_tracks.get())))
        try:
            await asyncio.sleep(1.0)  # both sides connected and settled before the first word
            gate.set()
            await asyncio.wait_for(mic.done.wait(), 120)
        finally:
            await http.post("/api/hangup", json={"callId": call_id})
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            if caller is not None:
                await caller.aclose()
            else:
                await pc.close()
    out = []
    for k, end in enumerate(heard.ends):
        until = heard.ends[k + 1] if k + 1 < len(heard.ends) else math.inf
        first = next((p for p in heard.packets if end <= p < until), None)
        if first is not None:
            out.append((first - end) * 1000)
    return out


async def measure(calls: int, turns: int) -> dict[str, tuple[list[float], int]]:
    from parley.standins.server import BackgroundServer
    from parley.standins.sfu.app import create_app as create_sfu

    voice = speech()
    results: dict[str, tuple[list[float], int]] = {"direct": ([], 0), "sfu": ([], 0)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        BackgroundServer(create_sfu(app_id=APP_ID, app_secret=APP_SECRET)) as sfu,
        BackgroundServer(parley_app(Path(tmp), sfu.url)) as parley,
    ):
        for i in range(calls):
            for path in ("direct", "sfu"):
                got = await one_call(parley.url, path, i, voice, turns)
                samples, missed = results[path]
                results[path] = (samples + got, missed + turns - len(got))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and turns")
    args = parser.parse_args()
    calls, turns = QUICK if args.quick else FULL
    try:
        results = asyncio.run(measure(calls, turns))
    except Exception as exc:  # a bench never fails the build; say why it has no figures
        print(f"\n## Cloudflare mode (SFU) vs direct: not measured ({type(exc).__name__}: {exc})")
        return
    print(
        f"\n## Cloudflare mode: end of speech -> first audible reply frame at the caller, ms "
        f"({calls} calls x {turns} turns per path, one at a time, loopback)\n"
    )
    print("| path | turns heard | missed | p50 | p95 | max |")
    print("|---|---|---|---|---|---|")
    p50: dict[str, float] = {}
    for path, (samples, missed) in results.items():
        if not samples:
            print(f"| {path} | 0 | {missed} | - | - | - |")
            continue
        p50[path] = percentile(samples, 50)
        print(
            f"| {path} | {len(samples)} | {missed} | {p50[path]:.0f} | {percentile(samples, 95):.0f} "
            f"| {max(samples):.0f} |"
        )
    if len(p50) == 2:
        print(
            f"\nSFU / direct latency (p50): {p50['sfu'] / p50['direct']:.2f}; the SFU path adds "
            f"{p50['sfu'] - p50['direct']:.0f} ms (one relay hop each way through the stand-in, which "
            "decodes and re-encodes)."
        )


if __name__ == "__main__":
    main()
