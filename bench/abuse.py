"""What one abusive client costs everyone else: a second client's /healthz latency while it runs.

    .venv/bin/python bench/abuse.py [--requests 60]

A real `parley serve` in its own process (no models, so only the server's own work counts); each
abuser of issue 11's list runs in a process of its own against it, and meanwhile a polite client
times /healthz. Reported as p50 / p95 and as a ratio to the same client against the idle server,
measured in the same run. Prints markdown; exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile
from parley.standins.server import free_port

ROOT = Path(__file__).resolve().parents[1]


# -- abusers (each runs in a child process until it is killed) ---------------------------------------


async def big_headers(host: str, port: int) -> None:
    """A 16 MiB request header, again and again (the guard should cut each off early)."""
    line = b"X-Big: " + b"a" * (16 << 20) + b"\r\n"
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + line + b"\r\n")
            await writer.drain()
            await reader.read(1024)
            writer.close()
        except OSError:
            await asyncio.sleep(0.01)


async def slowloris(host: str, port: int) -> None:
    """500 connections that send a header line now and then and never finish."""
    held: list[asyncio.StreamWriter] = []
    while True:
        while len(held) < 500:
            try:
                _, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                held.append(writer)
            except OSError:
                break
        await asyncio.sleep(1.0)
        alive = []
        for writer in held:
            try:
                writer.write(b"X-a: b\r\n")
                await writer.drain()
                alive.append(writer)
            except OSError:
                writer.close()
        held = alive


async def nested_json(host: str, port: int) -> None:
    body = '{"sessionId":"deep","x":' + "[" * 1500 + "]" * 1500 + "}"
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
        while True:
            await client.post("/api/chat", content=body, headers={"Content-Type": "application/json"})


async def surrogate_frames(host: str, port: int) -> None:
    frame = json.dumps({"type": "chat", "message": "hello", "clientId": "x\ud800"})
    while True:
        try:
            async with websockets.connect(f"ws://{host}:{port}/ws?sessionId=abuse") as ws:
                for _ in range(100):
                    await ws.send(frame)
        except (OSError, websockets.WebSocketException):
            await asyncio.sleep(0.01)


async def chunked_upload(host: str, port: int) -> None:
    """Endless chunked multipart uploads to /api/transcribe (stopped at the byte limit)."""
    chunk = b"\0" * 65536
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                b"POST /api/transcribe HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            )
            head = b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
            writer.write(b"%x\r\n%s\r\n" % (len(head), head))
            for _ in range(4096):  # up to 256 MiB, unless the server answers first
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                if reader.at_eof():
                    break
            writer.close()
        except OSError:
            await asyncio.sleep(0.01)


async def ice_flood(host: str, port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
        while True:
            await client.get("/api/ice")


ABUSERS: dict[str, Callable[[str, int], Awaitable[None]]] = {
    "16 MiB headers, repeatedly": big_headers,
    "slowloris, 500 connections": slowloris,
    "1,500-deep JSON bodies": nested_json,
    "lone-surrogate WebSocket frames": surrogate_frames,
    "endless chunked upload": chunked_upload,
    "/api/ice flood": ice_flood,
}


# -- the polite client ------------------------------------------------------------------------------


async def healthz_latency(url: str, requests: int) -> list[float]:
    times: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(requests):
            start = time.perf_counter()
            response = await client.get("/healthz")
            times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.text
            await asyncio.sleep(0.02)
    return times


def start_server(port: int, data: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "PARLEY_DATA_DIR": str(data),
        "PARLEY_LLM": "none",
        "PARLEY_STT": "none",
        "PARLEY_TTS": "none",
        "PARLEY_WARM_UP": "false",
        "PARLEY_LOG_LEVEL": "ERROR",
    }
    parley = Path(sys.executable).parent / "parley"
    server = subprocess.Popen([str(parley), "serve", "--port", str(port)], env=env, cwd=data)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("parley serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--abuser", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.abuser:  # a child process: abuse until killed
        asyncio.run(ABUSERS[args.abuser]("127.0.0.1", args.port))
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="parley-abuse-") as tmp:
        server = start_server(port, Path(tmp))
        try:
            idle = asyncio.run(healthz_latency(url, args.requests))
            rows = [("idle server", idle)]
            for name in ABUSERS:
                child = subprocess.Popen([sys.executable, __file__, "--abuser", name, "--port", str(port)])
                try:
                    time.sleep(1.0)  # let it get going
                    rows.append((name, asyncio.run(healthz_latency(url, args.requests))))
                finally:
                    child.kill()
                    child.wait()
                time.sleep(0.5)
        finally:
            server.terminate()
            server.wait(timeout=30)
    base = statistics.median(idle)
    print("| while this client runs | /healthz p50 ms | p95 ms | p50 / idle |")
    print("|---|---|---|---|")
    for name, times in rows:
        p50 = statistics.median(times)
        p95 = percentile(sorted(times), 95)
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {p50 / base:.2f} |")


if __name__ == "__main__":
    main()
