"""XiaoZhi devices: end of speech -> first downlink audio packet, and downlink packets on time.

    .venv/bin/python bench/xiaozhi.py [--quick] [--devices 30,50,75,100] [--turns 3] [--stagger]
                                      [--profile FILE]

The server is the real app in a process of its own, run as `parley serve` runs it (uvicorn.run:
uvloop, the same options, a frozen GC), with Silero VAD and the fixed-latency providers of
bench/voice.py: STT 100 ms, LLM first token 200 ms then 30 tokens/s, TTS first byte 100 ms. The
devices are WebSocket clients in this process (uvloop too), each streaming Piper-spoken speech
as 60 ms Opus frames in real time, then silence, in realtime mode, for a few turns each: all at
once by default (every device ends its speech in the same 60 ms: the stress case), or spread
over one utterance with `--stagger`, as independent devices are. Both processes stamp
`time.perf_counter()` (one monotonic clock on Linux).

- latency: from the true end of the speech in the stream (its last non-silent sample, sent at
  its real-time instant) to the first binary packet of the reply; p50 / p95 over every turn.
  It includes the VAD's 0.2 s hangover and the providers' 0.4 s, which are listed apart.
- late packets: a reply's packet k is due at first + k x 60 ms; one arriving more than 60 ms after
  that is late (a device's jitter buffer holds about that much).
- CPU: the server's per count (of one core) and per device; the devices' own, and how late each
  loop wakes from a 10 ms sleep (a late packet the devices' loop saw late is the bench's doing).
- the last line: the most devices with < 1% late packets and every turn answered.
- `--profile FILE`: cProfile the server process (read it with `python -m pstats FILE`).
Prints markdown; always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, machine, percentile, raise_nofile, run_loop, table

STT_DELAY, FIRST_TOKEN, TOKEN_INTERVAL, TTS_FIRST_BYTE, STOP_SECS = 0.1, 0.2, 1 / 30, 0.1, 0.2
RATE = 16000
FRAME = RATE * 60 // 1000
SAYING = "Please turn on the kitchen lights."


def serve(port: int, data_dir: str, ready: Any, profile: str | None) -> None:
    """The server process: the real app run as `parley serve` runs it (uvicorn.run: uvloop, the
    same options, a frozen GC), with the fixed-latency providers; `profile`: cProfile it into
    that file until it is stopped (SIGTERM)."""
    import cProfile

    import uvicorn

    from parley.app import create_app
    from parley.config import Settings
    from parley.providers.factory import build_vad
    from parley.providers.testing import EchoChat
    from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
    from parley.web.server import server_options

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=Path(data_dir),
        port=port,
        vad="silero",
        llm="none",
        stt="none",
        warm_up=False,
        log_level="WARNING",
        max_calls=1000,
        rate_calls="1000000/minute",
        rate_chat="1000000/minute",
        vad_stop_secs=STOP_SECS,
    )
    app = create_app(
        settings,
        chat=EchoChat(first_token_delay=FIRST_TOKEN, token_interval=TOKEN_INTERVAL),
        stt=FixedLatencySTT(delay=STT_DELAY, text="turn on the lights"),
        tts=FixedLatencyTTS(first_byte=TTS_FIRST_BYTE, secs_per_char=0.06),
        vad=build_vad(settings),
        freeze_gc=True,
    )
    profiler = cProfile.Profile() if profile else None
    if profiler is not None and profile is not None:
        path = profile

        def dump(*_: object) -> None:  # SIGUSR1: uvicorn re-raises SIGTERM, so no finally runs
            profiler.disable()
            profiler.dump_stats(path)

        signal.signal(signal.SIGUSR1, dump)
        profiler.enable()
    ready.send(os.getpid())
    uvicorn.run(LagWatch(app), **server_options(settings))


class LagWatch:
    """The app, plus how late the server's loop wakes from a 10 ms sleep; `GET /bench/lag`
    answers the lags since the last ask (a late packet from a stalled server loop is the
    server's; one from a stalled devices' loop is the bench's)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lags: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.task is None and scope["type"] != "lifespan":
            self.task = asyncio.create_task(self.watch())
        if scope["type"] == "http" and scope["path"] == "/bench/lag":
            body = json.dumps(self.lags).encode()
            self.lags = []
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    async def watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - before - 0.01)


def server_lags(base: str) -> list[float]:
    import httpx

    lags: list[float] = httpx.get(f"{base}/bench/lag", timeout=30).json()
    return lags


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def speech() -> tuple[bytes, float]:
    """(16 kHz PCM: 0.5 s silence, the saying, 1.5 s silence; the speech's true end in seconds)."""
    from parley.audio.pcm import resample
    from parley.config import Settings
    from parley.providers.factory import build_tts

    async def make() -> bytes:
        tts = build_tts(Settings(_env_file=None, tts="piper", log_level="WARNING"))  # type: ignore[call-arg]
        chunks = [c async for c in tts.synthesize(SAYING)]
        await tts.aclose()
        return resample(b"".join(c.pcm for c in chunks), chunks[0].sample_rate, RATE)

    voiced = np.frombuffer(asyncio.run(make()), dtype="<i2")
    nonzero = np.flatnonzero(np.abs(voiced) > 100)
    voiced = voiced[nonzero[0] : nonzero[-1] + 1].astype(np.float64)
    audio = np.concatenate([np.zeros(RATE // 2), voiced, np.zeros(int(1.5 * RATE))])
    audio += np.random.default_rng(1).normal(0.0, 0.003 * 32767, len(audio))
    return np.clip(audio, -32768, 32767).astype("<i2").tobytes(), 0.5 + len(voiced) / RATE


def packets(pcm: bytes) -> list[bytes]:
    import av

    codec: Any = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = RATE, "mono", "s16"
    codec.options = {"frame_duration": "60"}
    codec.open()
    samples = np.frombuffer(pcm, dtype="<i2")
    samples = np.concatenate([samples, np.zeros((-len(samples)) % FRAME, dtype=np.int16)])
    out: list[bytes] = []
    for i in range(0, len(samples), FRAME):
        frame = av.AudioFrame.from_ndarray(samples[i : i + FRAME].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, i
        out.extend(bytes(p) for p in codec.encode(frame))
    return out


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    packets: int = 0
    late: int = 0
    missed: int = 0
    lags: list[float] = field(default_factory=list)


async def device(
    index: int, base: str, talk: list[bytes], end_secs: float, turns: int, out: Results, delay: float = 0.0
) -> None:
    import httpx
    import websockets

    mac = f"be:0c:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}"
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{base}/xiaozhi/ota/", headers={"Device-Id": mac, "Client-Id": f"bench-{index}"}, json={}
        )
    assert answer.status_code == 200, answer.text
    ws_info = answer.json()["websocket"]
    headers = {"Authorization": f"Bearer {ws_info['token']}", "Protocol-Version": "3", "Device-Id": mac}
    silence = packets(bytes(FRAME * 2))[0]
    async with websockets.connect(ws_info["url"], additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "hello", "version": 3, "audio_params": {"format": "opus"}}))
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "listen", "state": "start", "mode": "realtime"}))
        await asyncio.sleep(delay)
        for _ in range(turns):
            stopped = asyncio.Event()
            arrivals: list[float] = []

            async def receive(arrivals: list[float], stopped: asyncio.Event) -> None:
                while True:
                    message = await ws.recv()
                    if isinstance(message, bytes):
                        arrivals.append(time.perf_counter())
                    elif json.loads(message).get("state") == "stop":
                        stopped.set()
                        return

            reader = asyncio.create_task(receive(arrivals, stopped))
            start = time.perf_counter()
            for k, packet in enumerate(talk):  # the microphone, in real time
                await asyncio.sleep(max(0.0, start + k * 0.06 - time.perf_counter()))
                await ws.send(b"\x00\x00" + len(packet).to_bytes(2, "big") + packet)
            k = len(talk)
            while not stopped.is_set():  # the microphone goes on: silence until the reply ends
                await asyncio.sleep(max(0.0, start + k * 0.06 - time.perf_counter()))
                await ws.send(b"\x00\x00" + len(silence).to_bytes(2, "big") + silence)
                k += 1
                if k * 0.06 > 30:
                    break
            reader.cancel()
            if not arrivals:
                out.missed += 1
                continue
            out.latencies.append(arrivals[0] - (start + end_secs))
            out.packets += len(arrivals)
            out.late += sum(1 for i, at in enumerate(arrivals) if at - (arrivals[0] + i * 0.06) > 0.06)


async def measure(
    base: str, count: int, turns: int, talk: list[bytes], end_secs: float, stagger: bool
) -> Results:
    """`stagger`: the devices' first words spread evenly over one utterance, as independent
    devices would be, instead of every device ending its speech in the same 60 ms."""
    out = Results()
    watch = asyncio.create_task(watch_lag(out.lags))
    spread = len(talk) * 0.06 if stagger else 0.0
    try:
        await asyncio.gather(
            *(
                device(i + count * 1000, base, talk, end_secs, turns, out, delay=spread * i / count)
                for i in range(count)
            )
        )
    finally:
        watch.cancel()
    return out


async def watch_lag(lags: list[float]) -> None:
    """How late this (the devices') loop wakes from a 10 ms sleep: a late packet that a late
    client loop saw late is the client's doing, not the server's."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - before - 0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 and 10 devices, 2 turns each")
    parser.add_argument(
        "--devices", default=None, help="comma-separated device counts (default 1,10,30,50,75,100)"
    )
    parser.add_argument("--turns", type=int, default=None, help="turns per device (default 3)")
    parser.add_argument("--profile", default=None, help="cProfile the server process into this file")
    parser.add_argument(
        "--stagger",
        action="store_true",
        help="spread the devices' turns over one utterance (not all at once)",
    )
    args = parser.parse_args()
    default = "1,10" if args.quick else "1,10,30,50,75,100"
    counts = [int(c) for c in (args.devices or default).split(",")]
    turns = args.turns or (2 if args.quick else 3)
    from parley.standins.server import free_port

    raise_nofile()
    pcm, end_secs = speech()
    talk = packets(pcm)
    port = free_port("127.0.0.1")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(port, tmp, child, args.profile), daemon=True)
        proc.start()
        pid = parent.recv()
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        rows = []
        within = 0  # the most devices with < 1% late packets and every turn answered
        try:
            for count in counts:
                server_lags(base)  # the lags of the counts before are not this one's
                cpu, own = cpu_seconds(pid), cpu_seconds(os.getpid())
                began = time.perf_counter()
                res = run_loop(measure(base, count, turns, talk, end_secs, args.stagger))
                wall = time.perf_counter() - began
                used = (cpu_seconds(pid) - cpu) / wall * 100
                client = (cpu_seconds(os.getpid()) - own) / wall * 100
                lags = sorted(res.lags)
                stalls = sorted(server_lags(base))
                lat = sorted(res.latencies)
                late = res.late / max(1, res.packets) * 100
                if late < 1 and not res.missed:
                    within = max(within, count)
                rows.append(
                    [
                        str(count),
                        str(len(lat)),
                        str(res.missed),
                        f"{percentile(lat, 50) * 1000:.0f}" if lat else "-",
                        f"{percentile(lat, 95) * 1000:.0f}" if lat else "-",
                        f"{late:.2f}%",
                        f"{used:.0f}%",
                        f"{used / count:.2f}%",
                        f"{client:.0f}%",
                        f"{percentile(lags, 99) * 1000:.0f}" if lags else "-",
                        f"{percentile(stalls, 99) * 1000:.0f} / {stalls[-1] * 1000:.0f}" if stalls else "-",
                    ]
                )
        finally:
            if args.profile:
                os.kill(pid, signal.SIGUSR1)
                deadline = time.monotonic() + 30
                while not Path(args.profile).exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(1)  # written by then
            proc.terminate()  # uvicorn shuts down on SIGTERM; the profile is written after it
            proc.join(30)
    print("## XiaoZhi devices: end of speech -> first downlink packet\n")
    print("\n".join(f"- {line}" for line in machine()))
    print(
        f"- providers: STT {STT_DELAY * 1000:.0f} ms, LLM first token {FIRST_TOKEN * 1000:.0f} ms, "
        f"TTS first byte {TTS_FIRST_BYTE * 1000:.0f} ms; VAD hangover {STOP_SECS * 1000:.0f} ms "
        f"(a floor of {(STT_DELAY + FIRST_TOKEN + TTS_FIRST_BYTE + STOP_SECS) * 1000:.0f} ms)"
    )
    when = "turns spread over one utterance (--stagger)" if args.stagger else "every device talking at once"
    print(f"- {turns} turns per device, {when}; server CPU in % of one core\n")
    headers = [
        "devices",
        "turns",
        "unanswered",
        "p50 ms",
        "p95 ms",
        "late packets",
        "server CPU",
        "per device",
        "devices' CPU",
        "devices' loop lag p99 ms",
        "server loop lag p99 / max ms",
    ]
    print(table(headers, rows))
    print(f"\nDevices with < 1% late packets and every turn answered: {within or 'none'} of {counts}")
    if args.profile:
        print(f"\nServer profile: {args.profile} (python -m pstats {args.profile})")


if __name__ == "__main__":
    main()
