"""Time to first token added by Parley, next to the bare HTTP hop from the same client.

`python bench/ttft.py` runs issue 10's table on its own: per stream, (the client's first token
bytes) - (the client's request), through Parley and straight from the upstream, at 1, 20 and 50
streams, on new sessions (a fresh id per turn, as every first message of a conversation) and on
existing ones (live sessions with history), and Parley's CPU per streamed turn.

Per stream: (when this client read the first bytes of a token) - (when the stand-in wrote that
stream's first token). Through Parley the token crosses two hops and Parley's turn machinery
(upstream SSE decode, session, SSE encode); direct, it crosses one hop. Both paths run in the same
process with the same client, interleaved round by round, so their ratio survives a noisy machine.

"To upstream" is (stand-in's first token) - (request sent) - the stand-in's fixed first-token
delay: through Parley, the turn's set-up (session, store writes, opening the upstream request) and
any wait for Parley's event loop; direct, the hop alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field

import httpx

from common import (
    ACCOUNT,
    FIRST_TOKEN_DELAY,
    MODEL,
    TOKEN,
    TOKEN_INTERVAL,
    Servers,
    Summary,
    check_shared_clock,
    machine,
    ratio,
    run_loop,
    servers,
    table,
)
from parley.config import DEFAULT_SYSTEM_PROMPT

PARLEY_MARK = b"event: chunk"
DIRECT_MARK = b"data:"


@dataclass(slots=True)
class PathSamples:
    """One path's samples, in ms: first token added, and request sent -> upstream started."""

    added: list[float] = field(default_factory=list)
    to_upstream: list[float] = field(default_factory=list)
    #: the client's request -> the client's first token bytes: what a user waits
    first_token: list[float] = field(default_factory=list)


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


def new_session_id() -> str:
    return f"bench-ttft-{uuid.uuid4().hex[:16]}"


async def via_parley(servers: Servers, message: str, session_id: str | None = None) -> tuple[float, float]:
    """(when the request was sent, when its first token arrived); a new session unless named."""
    body = {"message": message, "sessionId": session_id or new_session_id(), "stream": True}
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


async def _batch(
    servers: Servers, path: str, size: int, samples: Samples, sessions: list[str] | None = None
) -> None:
    """`size` concurrent streams on one path, each with its own message and Parley session: new
    ones, or `sessions` (existing, one per stream)."""
    messages = [f"bench {path} {uuid.uuid4().hex[:12]}" for _ in range(size)]
    cpu = servers.parley_cpu()
    if path == "parley":
        ids = sessions if sessions is not None else [None] * size
        sends = [via_parley(servers, m, sid) for m, sid in zip(messages, ids, strict=True)]
    else:
        sends = [direct(servers, m) for m in messages]
    stamps = await asyncio.gather(*sends)
    if path == "parley":
        samples.parley_cpu += servers.parley_cpu() - cpu
        samples.parley_streams += size
    upstream = (await servers.stamps()).first
    into = samples.parley if path == "parley" else samples.direct
    for message, (sent, first) in zip(messages, stamps, strict=True):
        into.first_token.append((first - sent) * 1000)
        origin = upstream.get(message)
        if origin is None:
            samples.unmatched += 1
        else:
            into.added.append((first - origin) * 1000)
            into.to_upstream.append((origin - sent - FIRST_TOKEN_DELAY) * 1000)


async def measure(
    servers: Servers,
    *,
    concurrency: int,
    rounds: int,
    deadline: float,
    sessions: list[str] | None = None,
) -> Samples:
    """`rounds` batches per path, alternating which path goes first; stops early at `deadline`.

    Through Parley each stream opens a new session, or runs on `sessions` (one per stream).
    """
    samples = Samples()
    for index in range(rounds):
        if time.monotonic() > deadline:
            break
        order = ("direct", "parley") if index % 2 == 0 else ("parley", "direct")
        for path in order:
            await _batch(servers, path, concurrency, samples, sessions)
    return samples


async def existing_sessions(servers: Servers, count: int) -> list[str]:
    """`count` sessions with one finished exchange each, live in Parley (not counted)."""
    ids = [new_session_id() for _ in range(count)]
    await asyncio.gather(*(via_parley(servers, f"prime {sid}", sid) for sid in ids))
    await servers.stamps()
    return ids


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


# -- issue 10: from the client's request, new and existing sessions, CPU per turn -----------------

ADDED_AT_1_TARGET_MS = 1.0  # added p50 at 1 stream, new session
CPU_TARGET_MS = 2.0  # Parley's CPU per streamed turn
RATIO_AT_50_TARGET = 1.3  # Parley's p50 / direct p50 at 50 streams


@dataclass(slots=True, frozen=True)
class Case:
    streams: int
    existing: bool
    samples: Samples

    @property
    def cpu_ms(self) -> float:
        s = self.samples
        return s.parley_cpu * 1000 / s.parley_streams if s.parley_streams else float("nan")


async def measure_cases(servers: Servers, plan: dict[int, int], *, deadline: float) -> list[Case]:
    """Each (streams, rounds) of `plan`, on new sessions and then on existing ones."""
    cases = []
    for streams, rounds in plan.items():
        pool = await existing_sessions(servers, streams)
        for existing in (False, True):
            samples = await measure(
                servers,
                concurrency=streams,
                rounds=rounds,
                deadline=deadline,
                sessions=pool if existing else None,
            )
            cases.append(Case(streams, existing, samples))
    return cases


def report_from_request(cases: list[Case]) -> str:
    headers = [
        "streams",
        "sessions",
        "n",
        "direct p50 ms",
        "via Parley p50 ms",
        "added p50 ms",
        "ratio p50",
        "direct p95 ms",
        "via Parley p95 ms",
        "Parley CPU ms/turn",
    ]
    rows = []
    for case in cases:
        d = Summary.of(case.samples.direct.first_token)
        p = Summary.of(case.samples.parley.first_token)
        rows.append(
            [
                str(case.streams),
                "existing" if case.existing else "new",
                str(p.n),
                f"{d.p50:.2f}",
                f"{p.p50:.2f}",
                f"{p.p50 - d.p50:.2f}",
                ratio(p.p50, d.p50),
                f"{d.p95:.2f}",
                f"{p.p95:.2f}",
                f"{case.cpu_ms:.2f}",
            ]
        )
    return table(headers, rows)


def goals(cases: list[Case]) -> list[str]:
    def verdict(ok: bool, what: str) -> str:
        return f"{'PASS' if ok else 'MISS'} {what}"

    lines = []
    for case in cases:
        d = Summary.of(case.samples.direct.first_token).p50
        p = Summary.of(case.samples.parley.first_token).p50
        kind = "existing" if case.existing else "new"
        if case.streams == 1 and not case.existing:
            lines.append(
                verdict(
                    p - d < ADDED_AT_1_TARGET_MS,
                    f"added p50 at 1 stream, new session: {p - d:.2f} ms "
                    f"(target < {ADDED_AT_1_TARGET_MS:g} ms)",
                )
            )
        if case.streams == 50:
            lines.append(
                verdict(
                    p / d < RATIO_AT_50_TARGET,
                    f"p50 at 50 streams, {kind} sessions: {p / d:.2f}x direct "
                    f"(target < {RATIO_AT_50_TARGET:g}x)",
                )
            )
    streams = sum(c.samples.parley_streams for c in cases)
    cpu = sum(c.samples.parley_cpu for c in cases) * 1000 / streams if streams else float("nan")
    lines.append(
        verdict(
            cpu < CPU_TARGET_MS, f"Parley CPU per streamed turn: {cpu:.2f} ms (target < {CPU_TARGET_MS:g} ms)"
        )
    )
    return lines


async def _main(plan: dict[int, int]) -> None:
    async with servers() as running:
        await warm_up(running)
        cases = await measure_cases(running, plan, deadline=time.monotonic() + 600)
    print(
        f"\n## Time to first token from the client's request, ms (stand-in: first token after "
        f"{FIRST_TOKEN_DELAY * 1000:.0f} ms, then one per {TOKEN_INTERVAL * 1000:.0f} ms)\n"
    )
    print(report_from_request(cases))
    print("\n" + "\n".join(goals(cases)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    args = parser.parse_args()
    for line in machine():
        print(line)
    print(f"clock: {check_shared_clock()}; load average at start: {os.getloadavg()[0]:.2f}")
    plan = {1: 10, 20: 3, 50: 2} if args.quick else {1: 60, 20: 10, 50: 6}
    run_loop(_main(plan))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
