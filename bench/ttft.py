"""Time to first token added by Parley, next to the bare HTTP hop from the same client.

Per stream: (when this client read the first bytes of a token) - (when the stand-in wrote that
stream's first token). Through Parley the token crosses two hops and Parley's turn machinery
(upstream SSE decode, session, SSE encode); direct, it crosses one hop. Both paths run in the same
process with the same client, interleaved round by round, so their ratio survives a noisy machine.

"To upstream" is (stand-in's first token) - (request sent) - the stand-in's fixed first-token
delay: through Parley, the turn's set-up (session, store writes, opening the upstream request) and
any wait for Parley's event loop; direct, the hop alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import httpx

from common import ACCOUNT, FIRST_TOKEN_DELAY, MODEL, TOKEN, Servers, Summary, ratio, table
from parley.config import DEFAULT_SYSTEM_PROMPT

PARLEY_MARK = b"event: chunk"
DIRECT_MARK = b"data:"


@dataclass(slots=True)
class PathSamples:
    """One path's samples, in ms: first token added, and request sent -> upstream started."""

    added: list[float] = field(default_factory=list)
    to_upstream: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Samples:
    direct: PathSamples = field(default_factory=PathSamples)
    parley: PathSamples = field(default_factory=PathSamples)
    unmatched: int = 0
    parley_cpu: float = 0.0  # Parley's CPU seconds spent on its streams
    parley_streams: int = 0


async def _first_mark(response: httpx.Response, mark: bytes) -> float:
    """Stamp the read that completes `mark`, then read on to the end, as a real client would."""
    if response.is_error:
        await response.aread()
        response.raise_for_status()
    stamp = 0.0
    tail = b""
    async for raw in response.aiter_raw():
        if not stamp:
            now = time.perf_counter()
            seen = tail + raw
            if mark in seen:
                stamp = now
            tail = seen[-len(mark) :]
    if not stamp:
        raise RuntimeError(f"stream ended without {mark!r}")
    return stamp


async def via_parley(servers: Servers, message: str) -> tuple[float, float]:
    """(when the request was sent, when its first token arrived)."""
    body = {"message": message, "sessionId": f"bench-ttft-{uuid.uuid4().hex[:16]}", "stream": True}
    sent = time.perf_counter()
    async with servers.http.stream("POST", f"{servers.parley_url}/api/chat", json=body) as response:
        return sent, await _first_mark(response, PARLEY_MARK)


async def direct(servers: Servers, message: str) -> tuple[float, float]:
    # The body Parley itself sends, so the stand-in does the same work on both paths.
    body = {
        "messages": [
            {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": message},
        ],
        "max_tokens": 512,
        "stream": True,
    }
    url = f"{servers.standin_url}/client/v4/accounts/{ACCOUNT}/ai/run/{MODEL}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    sent = time.perf_counter()
    async with servers.http.stream("POST", url, json=body, headers=headers) as response:
        return sent, await _first_mark(response, DIRECT_MARK)


async def _batch(servers: Servers, path: str, size: int, samples: Samples) -> None:
    """`size` concurrent streams on one path, each with its own message (and Parley session)."""
    messages = [f"bench {path} {uuid.uuid4().hex[:12]}" for _ in range(size)]
    send = via_parley if path == "parley" else direct
    cpu = servers.parley_cpu()
    stamps = await asyncio.gather(*(send(servers, m) for m in messages))
    if path == "parley":
        samples.parley_cpu += servers.parley_cpu() - cpu
        samples.parley_streams += size
    upstream = (await servers.stamps()).first
    into = samples.parley if path == "parley" else samples.direct
    for message, (sent, first) in zip(messages, stamps, strict=True):
        origin = upstream.get(message)
        if origin is None:
            samples.unmatched += 1
        else:
            into.added.append((first - origin) * 1000)
            into.to_upstream.append((origin - sent - FIRST_TOKEN_DELAY) * 1000)


async def measure(servers: Servers, *, concurrency: int, rounds: int, deadline: float) -> Samples:
    """`rounds` batches per path, alternating which path goes first; stops early at `deadline`."""
    samples = Samples()
    for index in range(rounds):
        if time.monotonic() > deadline:
            break
        order = ("direct", "parley") if index % 2 == 0 else ("parley", "direct")
        for path in order:
            await _batch(servers, path, concurrency, samples)
    return samples


async def warm_up(servers: Servers) -> None:
    """Open connections and import lazily loaded code on both paths; nothing here is counted."""
    for _ in range(3):
        await _batch(servers, "direct", 10, Samples())
        await _batch(servers, "parley", 10, Samples())


def report(results: dict[int, Samples]) -> str:
    headers = [
        "streams",
        "path",
        "n",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "to upstream p50 / p99 ms",
        "Parley CPU ms/stream",
    ]
    rows: list[list[str]] = []
    for concurrency, samples in results.items():
        d, p = Summary.of(samples.direct.added), Summary.of(samples.parley.added)
        cpu = samples.parley_cpu * 1000 / samples.parley_streams if samples.parley_streams else 0.0
        n = str(concurrency)
        rows.append([n, "direct: client <- stand-in", *d.cells(), _pair(samples.direct.to_upstream), "-"])
        rows.append(
            [
                n,
                "via Parley: client <- Parley <- stand-in",
                *p.cells(),
                _pair(samples.parley.to_upstream),
                f"{cpu:.2f}",
            ]
        )
        pairs = ((p.p50, d.p50), (p.p95, d.p95), (p.p99, d.p99), (p.max, d.max))
        rows.append([n, "ratio via Parley / direct", "", *(ratio(a, b) for a, b in pairs), "", ""])
        if samples.unmatched:
            rows.append([n, f"({samples.unmatched} streams not paired, left out)", *[""] * 7])
    return table(headers, rows)


def _pair(values: list[float]) -> str:
    summary = Summary.of(values)
    return f"{summary.p50:.1f} / {summary.p99:.1f}"
