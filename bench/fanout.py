"""Fan-out: how long one session event takes to reach every WebSocket on the session.

N sockets (split across client processes, see `wsclients.py`) sit on `/ws?sessionId=S`; one turn
is sent to S over HTTP. Per socket: (when it received the turn's first `chunk`) - (when the stand-in
wrote the first token). That origin is the moment the event comes into existence, stamped in
another process on the same clock, so the figure is everything after it: Parley reading the
upstream, the session emitting, the bus handing the event to N writer tasks, N WebSocket writes,
and the client reading. Before the chunk, `user_message` and `turn_started` go to every socket
too; their sends overlapping the 50 ms upstream wait is part of a real turn, so it is kept.

The reply is ~20 tokens, one per 20 ms. "Reply lag" is each socket's `reply` event (the turn's
last) minus the stand-in's last token: the store's final write plus any backlog of chunks, which
grows along the reply if fanning one event out takes longer than the gap between tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from common import BENCH_DIR, Servers, Summary, table

REPLY_WORDS = 16


@dataclass(slots=True)
class FanoutResult:
    sockets: int
    processes: int
    deflate: bool
    latencies: list[float] = field(default_factory=list)
    rounds: list[Summary] = field(default_factory=list)
    reply_lags: list[list[float]] = field(default_factory=list)  # per round: `reply` - last token
    missing: int = 0  # sockets that saw no chunk of the round's turn
    parley_cpu_ms: list[float] = field(default_factory=list)
    client_cpu_ms: list[float] = field(default_factory=list)
    connect_s: float = 0.0
    rss_before_mb: float = 0.0  # Parley's resident memory before the sockets connected
    rss_after_mb: float = 0.0  # and after the last round, with them still open


class ClientProcess:
    """A `wsclients.py` child; commands go to its stdin, one JSON answer per line comes back."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, count: int, *, deflate: bool) -> ClientProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH_DIR / "wsclients.py"),
            f"--url={url}",
            f"--count={count}",
            *(["--deflate"] if deflate else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 22,
        )
        return cls(proc)

    async def answer(self, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"ws client process exited with {await self.proc.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.answer(timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.write(b"quit\n")
            await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def measure(
    servers: Servers,
    *,
    sockets: int,
    rounds: int,
    processes: int,
    deflate: bool,
    deadline: float,
    around_rounds: Callable[[], AbstractAsyncContextManager[None]] = contextlib.nullcontext,
) -> FanoutResult:
    """`rounds` turns to one session with `sockets` sockets on it; stops early at `deadline`.

    `around_rounds` wraps the turns but not the connecting (a profiler, say).
    """
    result = FanoutResult(sockets, processes, deflate)
    session = f"bench-fanout-{sockets}-{uuid.uuid4().hex[:12]}"
    url = servers.parley_url.replace("http://", "ws://") + f"/ws?sessionId={session}"
    shares = [sockets // processes + (i < sockets % processes) for i in range(processes)]
    result.rss_before_mb = servers.parley_rss_mb()
    started = time.perf_counter()
    clients = await asyncio.gather(*(ClientProcess.start(url, n, deflate=deflate) for n in shares))
    try:
        ready = await asyncio.gather(*(c.answer() for c in clients))
        result.connect_s = time.perf_counter() - started
        failed = sum(r["failed"] for r in ready)
        if failed:
            raise RuntimeError(f"{failed} of {sockets} WebSockets did not connect")
        # `parley serve` declines permessage-deflate (small JSON events; compressing each one per
        # socket cost ~40% more CPU here), so a browser-like client that offers it gets none.
        compressed = sum(r["compressed"] for r in ready)
        if compressed:
            raise RuntimeError(f"{compressed} of {sockets} sockets negotiated permessage-deflate")
        async with around_rounds():
            for _ in range(rounds):
                if time.monotonic() > deadline:
                    break
                await _round(servers, session, clients, result)
        result.rss_after_mb = servers.parley_rss_mb()
    finally:
        await asyncio.gather(*(c.stop() for c in clients))
    return result


async def _round(servers: Servers, session: str, clients: list[ClientProcess], result: FanoutResult) -> None:
    await asyncio.gather(*(c.ask("arm") for c in clients))
    # ~20 tokens, one per 20 ms: long enough to see whether fan-out keeps pace with the stream.
    message = f"bench fanout {uuid.uuid4().hex[:12]} " + " ".join(f"w{i}" for i in range(REPLY_WORDS))
    cpu = servers.parley_cpu()
    response = await servers.http.post(
        f"{servers.parley_url}/api/chat", json={"message": message, "sessionId": session}
    )
    response.raise_for_status()
    turn_id = response.json()["turnId"]
    answers = await asyncio.gather(*(c.ask("collect 15") for c in clients))
    result.parley_cpu_ms.append((servers.parley_cpu() - cpu) * 1000)
    result.client_cpu_ms.append(sum(a["cpu_ms"] for a in answers))
    stamps = await servers.stamps()
    origin, last = stamps.first.get(message), stamps.last.get(message)
    if origin is None or last is None:  # the turn never reached the stand-in: nothing to pair
        result.missing += sum(len(a["first"]) for a in answers)
        return
    latencies, lags = [], []
    for answer in answers:
        for first in answer["first"]:
            if first is None or first[1] != turn_id:
                result.missing += 1
                continue
            latencies.append((first[0] - origin) * 1000)
            if first[2] is not None:
                lags.append((first[2] - last) * 1000)
    result.latencies += latencies
    result.rounds.append(Summary.of(latencies))
    result.reply_lags.append(lags)


def report(results: list[FanoutResult]) -> str:
    headers = [
        "sockets",
        "deflate",
        "rows",
        "n",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "reply lag p50 / p99 ms",
        "Parley CPU ms/turn",
        "client CPU ms/turn",
    ]
    rows: list[list[str]] = []
    for res in results:
        for index, summary in enumerate(res.rounds if len(res.rounds) > 1 else []):
            rows.append(
                [
                    str(res.sockets),
                    _yes(res.deflate),
                    f"round {index + 1}",
                    *summary.cells(),
                    _lag(res.reply_lags[index]),
                    f"{res.parley_cpu_ms[index]:.0f}",
                    f"{res.client_cpu_ms[index]:.0f}",
                ]
            )
        total = Summary.of(res.latencies)
        parley = sum(res.parley_cpu_ms) / max(len(res.parley_cpu_ms), 1)
        client = sum(res.client_cpu_ms) / max(len(res.client_cpu_ms), 1)
        every_lag = [lag for lags in res.reply_lags for lag in lags]
        rows.append(
            [
                str(res.sockets),
                _yes(res.deflate),
                "all rounds",
                *total.cells(),
                _lag(every_lag),
                f"{parley:.0f}",
                f"{client:.0f}",
            ]
        )
        if res.missing:
            rows.append([str(res.sockets), "", f"({res.missing} socket-rounds without a chunk)", *[""] * 8])
    return table(headers, rows)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _lag(values: list[float]) -> str:
    summary = Summary.of(values)
    return f"{summary.p50:.1f} / {summary.p99:.1f}"
