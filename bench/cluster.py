"""Several `parley serve` nodes on one PostgreSQL database and one Redis (issue 13).

`python bench/cluster.py [--quick]` needs PostgreSQL and Redis on 127.0.0.1 (`make test` starts
them). It makes a database of its own (dropped after) and flushes Redis logical db 6 (this bench's
alone: the cluster tests use 7-15, the bus tests 0 with a prefix). All nodes share one Workers AI
stand-in process (first token after 50 ms, then one per 20 ms), text turns only (no speech models).

- Fan-out: one session, 1,000 WebSockets all on node 1 vs spread over 3 nodes (one client process
  per node), the turn sent to node 1. Per socket: its first `chunk` - the stand-in's first token,
  both on the same clock (common.py). Across nodes an event also crosses Redis.
- Throughput: streamed turns on new sessions, at once, sent round-robin to 1, 2 or 3 nodes; the
  CPU each node spent per turn it served (from /proc).
- Hand-off: a session's turns sent to its owner vs to another node (which, with the session
  directory, hands them to the owner): the client's time to the first chunk.
- Failover: kill -9 of a session's owner while its turn runs; the time until a survivor lists that
  reply as failed and the time until a new turn sent to a survivor has completed ("n/a" when the
  session is not served again within the deadline; then the other kills are skipped). The killed
  node is started again before the next kill.
Ratios are within one run; the machine is shared by the nodes, Redis, PostgreSQL and the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from common import (
    BENCH_DIR,
    FIRST_TOKEN_DELAY,
    HOST,
    TOKEN_INTERVAL,
    UNLIMITED,
    Stamps,
    Summary,
    _stop,
    _wait_ready,
    check_shared_clock,
    cpu_seconds,
    machine,
    ratio,
    run_loop,
    server_env,
    table,
)
from fanout import ClientProcess
from parley.standins.server import free_port

PG_ADMIN_URL = f"postgresql://postgres@{HOST}:5432/postgres"
#: this bench's own logical database, flushed before and after
REDIS_URL = f"redis://{HOST}:6379/6"
FANOUT_SOCKETS = 1000
FAILOVER_DEADLINE = 30.0
CLUSTER_SETTINGS = UNLIMITED | {
    "PARLEY_MAX_SOCKETS_PER_USER": "1000000",
    "PARLEY_NEW_SESSIONS_RATE_LIMIT": "1000000/minute",
    "PARLEY_MAX_QUEUED_TURNS": "1000",
    "PARLEY_STT": "none",
    "PARLEY_TTS": "none",
    "PARLEY_WARM_UP": "false",
}


@dataclass(slots=True)
class Node:
    index: int
    port: int
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def ws_url(self, session: str) -> str:
        return f"ws://{HOST}:{self.port}/ws?sessionId={session}"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


@dataclass(slots=True)
class Cluster:
    standin_url: str
    database_url: str
    tmp: Path
    http: httpx.AsyncClient
    nodes: list[Node] = field(default_factory=list)

    async def start(self, index: int) -> Node:
        """Node `index` (1-based), its own data dir and port; ready when this returns."""
        port = free_port(HOST)
        data = self.tmp / f"node-{index}"
        data.mkdir(exist_ok=True)
        env = (
            server_env(self.standin_url, data)
            | {
                "PARLEY_DATABASE_URL": self.database_url,
                "PARLEY_REDIS_URL": REDIS_URL,
                "PARLEY_NODE_ID": f"node-{index}",
            }
            | CLUSTER_SETTINGS
        )
        log = data / "stderr.log"
        with log.open("ab") as sink:
            proc = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "parley"),
                "serve",
                f"--port={port}",
                env=env,
                cwd=data,
                stderr=sink,
            )
        node = Node(index, port, proc, log)
        try:
            await _wait_ready(self.http, proc, f"{node.url}/healthz")
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"node-{index}: {exc}\n{log.read_text()[-3000:]}") from exc
        return node

    async def stamps(self) -> Stamps:
        response = await self.http.post(f"{self.standin_url}/_bench/stamps")
        response.raise_for_status()
        body = response.json()
        return Stamps(body["first"], body["last"])

    async def kill(self, node: Node) -> None:
        node.proc.send_signal(signal.SIGKILL)
        await node.proc.wait()

    async def restart(self, node: Node) -> Node:
        again = await self.start(node.index)
        self.nodes[self.nodes.index(node)] = again
        return again


async def _admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _flush_redis() -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@asynccontextmanager
async def cluster(count: int) -> AsyncIterator[Cluster]:
    name = "parley_bench_" + secrets.token_hex(6)
    await _admin(f'CREATE DATABASE "{name}"')
    await _flush_redis()
    standin_port = free_port(HOST)
    standin = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH_DIR / "standin.py"),
        f"--port={standin_port}",
        f"--first-token-delay={FIRST_TOKEN_DELAY}",
        f"--token-interval={TOKEN_INTERVAL}",
    )
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)  # see common.servers
    made: Cluster | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="parley-bench-cluster-") as tmp:
            async with httpx.AsyncClient(limits=limits, timeout=60) as http:
                standin_url = f"http://{HOST}:{standin_port}"
                await _wait_ready(http, standin, f"{standin_url}/_bench/ping")
                made = Cluster(standin_url, PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", Path(tmp), http)
                # the first alone (it migrates the new database), then the rest at once
                made.nodes.append(await made.start(1))
                made.nodes += await asyncio.gather(*(made.start(i) for i in range(2, count + 1)))
                yield made
    finally:
        for node in made.nodes if made is not None else []:
            await _stop(node.proc)
        await _stop(standin)
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _flush_redis()


# -- fan-out --------------------------------------------------------------------------------------


@dataclass(slots=True)
class FanoutCase:
    label: str
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    cpu_ms: dict[int, list[float]] = field(default_factory=dict)  # node index -> per round


async def fanout(c: Cluster, spread: int, rounds: int, deflate: bool = True) -> FanoutCase:
    case = FanoutCase(f"{FANOUT_SOCKETS} sockets on {spread} node{'s' if spread > 1 else ''}")
    session = f"bench-cluster-fanout-{spread}-{uuid.uuid4().hex[:10]}"
    targets = c.nodes[:spread]
    shares = [FANOUT_SOCKETS // spread + (i < FANOUT_SOCKETS % spread) for i in range(spread)]
    clients = await asyncio.gather(
        *(
            ClientProcess.start(n.ws_url(session), k, deflate=deflate)
            for n, k in zip(targets, shares, strict=True)
        )
    )
    try:
        ready = await asyncio.gather(*(client.answer() for client in clients))
        if failed := sum(r["failed"] for r in ready):
            raise RuntimeError(f"{failed} of {FANOUT_SOCKETS} WebSockets did not connect")
        for _ in range(rounds):
            await asyncio.gather(*(client.ask("arm") for client in clients))
            message = f"bench cluster fanout {uuid.uuid4().hex[:12]} " + " ".join(f"w{i}" for i in range(16))
            before = {n.index: n.cpu() for n in c.nodes}
            response = await c.http.post(
                f"{c.nodes[0].url}/api/chat", json={"message": message, "sessionId": session}
            )
            response.raise_for_status()
            turn_id = response.json()["turnId"]
            answers = await asyncio.gather(*(client.ask("collect 15") for client in clients))
            for node in c.nodes:
                case.cpu_ms.setdefault(node.index, []).append((node.cpu() - before[node.index]) * 1000)
            origin = (await c.stamps()).first.get(message)
            for answer in answers:
                for first in answer["first"]:
                    if origin is None or first is None or first[1] != turn_id:
                        case.missing += 1
                    else:
                        case.latencies.append((first[0] - origin) * 1000)
    finally:
        await asyncio.gather(*(client.stop() for client in clients))
    return case


def fanout_report(cases: list[FanoutCase]) -> str:
    headers = ["case", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "missing", "CPU ms/turn by node"]
    rows = []
    for case in cases:
        cpu = ", ".join(f"node-{i} {sum(v) / len(v):.0f}" for i, v in sorted(case.cpu_ms.items()) if v)
        rows.append([case.label, *Summary.of(case.latencies).cells(), str(case.missing), cpu])
    return table(headers, rows)


# -- throughput -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Throughput:
    nodes: int
    turns: int
    seconds: float
    failed: int
    cpu_ms_per_turn: dict[int, float]
    first_failure: str | None = None


async def _streamed_turn(http: httpx.AsyncClient, url: str, session: str, message: str) -> str | None:
    """None when the turn streamed to its `reply`, else what went wrong."""
    body = {"message": message, "sessionId": session, "stream": True}
    async with http.stream("POST", f"{url}/api/chat", json=body) as response:
        ended = b""
        async for piece in response.aiter_bytes():
            ended = (ended + piece)[-4096:]
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {ended[:300]!r}"
    return None if b"event: reply" in ended else f"no reply event; the stream ended with {ended[-300:]!r}"


async def throughput(c: Cluster, nodes: int, turns: int) -> Throughput:
    targets = c.nodes[:nodes]
    before = {n.index: n.cpu() for n in targets}
    served = {n.index: 0 for n in targets}
    jobs = []
    for i in range(turns):
        node = targets[i % nodes]
        served[node.index] += 1
        session = f"bench-cluster-tp-{nodes}-{i}-{uuid.uuid4().hex[:8]}"
        jobs.append(_streamed_turn(c.http, node.url, session, f"throughput turn {i} " + "word " * 16))
    started = time.perf_counter()
    results = await asyncio.gather(*jobs, return_exceptions=True)
    seconds = time.perf_counter() - started
    await c.stamps()  # forget them
    cpu = {n.index: (n.cpu() - before[n.index]) * 1000 / max(served[n.index], 1) for n in targets}
    failures = [repr(r) if isinstance(r, BaseException) else r for r in results if r is not None]
    return Throughput(nodes, turns, seconds, len(failures), cpu, failures[0] if failures else None)


def throughput_report(rows: list[Throughput]) -> str:
    base = rows[0].turns / rows[0].seconds if rows else 0.0
    out = []
    for row in rows:
        rate = row.turns / row.seconds
        cpu = ", ".join(f"node-{i} {v:.1f}" for i, v in sorted(row.cpu_ms_per_turn.items()))
        out.append(
            [
                str(row.nodes),
                str(row.turns),
                f"{row.seconds:.2f}",
                f"{rate:.1f}",
                ratio(rate, base),
                str(row.failed),
                cpu,
            ]
        )
    headers = ["nodes", "turns", "wall s", "turns/s", "vs 1 node", "failed", "CPU ms/turn by node"]
    notes = [
        f"\n{row.nodes} nodes, first failed turn: {row.first_failure}" for row in rows if row.first_failure
    ]
    return table(headers, out) + "".join(notes)


# -- hand-off -------------------------------------------------------------------------------------


async def _first_chunk_ms(http: httpx.AsyncClient, url: str, session: str, message: str) -> float:
    body = {"message": message, "sessionId": session, "stream": True}
    started = time.perf_counter()
    first: float | None = None
    async with http.stream("POST", f"{url}/api/chat", json=body) as response:
        response.raise_for_status()
        async for piece in response.aiter_bytes():
            if first is None and b"event: chunk" in piece:
                first = (time.perf_counter() - started) * 1000
    return first if first is not None else float("nan")


async def handoff(c: Cluster, rounds: int) -> tuple[list[float], list[float]]:
    session = f"bench-cluster-handoff-{uuid.uuid4().hex[:10]}"
    owner, other = c.nodes[0], c.nodes[1]
    await _first_chunk_ms(c.http, owner.url, session, "the first turn makes node-1 the owner")
    direct: list[float] = []
    handed: list[float] = []
    for i in range(rounds):
        direct.append(await _first_chunk_ms(c.http, owner.url, session, f"direct {i}"))
        handed.append(await _first_chunk_ms(c.http, other.url, session, f"handed {i}"))
    await c.stamps()
    return direct, handed


# -- failover -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Failover:
    to_failed: list[float] = field(default_factory=list)  # kill -> the reply listed as failed
    to_served: list[float] = field(default_factory=list)  # kill -> a new turn on a survivor completed
    not_served: int = 0
    attempts: int = 0


async def _reply_status(http: httpx.AsyncClient, url: str, session: str, turn_id: str) -> str | None:
    try:
        response = await http.get(f"{url}/api/history", params={"sessionId": session})
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    for message in response.json()["messages"]:
        if message["role"] == "assistant" and message["turnId"] == turn_id:
            return str(message["status"])
    return None  # still pending (not listed)


async def _running_turn(http: httpx.AsyncClient, url: str, session: str) -> tuple[str, asyncio.Task[Any]]:
    """Start a long turn at `url` and return its id once it has started (the reply is pending)."""
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def run() -> None:
        body = {"message": "a reply that never comes #sleep:60", "sessionId": session, "stream": True}
        try:
            async with http.stream("POST", f"{url}/api/chat", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("event: turn_started") and not started.done():
                        started.set_result(response.headers["x-turn-id"])
        except httpx.HTTPError:
            pass  # the node was killed under it
        if not started.done():
            started.set_exception(RuntimeError("the long turn ended before it started"))

    task = asyncio.create_task(run())
    return await started, task


async def failover(c: Cluster, kills: int) -> Failover:
    result = Failover()
    for k in range(kills):
        result.attempts += 1
        owner = c.nodes[k % len(c.nodes)]
        survivors = [n for n in c.nodes if n is not owner]
        session = f"bench-cluster-failover-{k}-{uuid.uuid4().hex[:8]}"
        response = await c.http.post(
            f"{owner.url}/api/chat", json={"message": "take it", "sessionId": session}
        )
        response.raise_for_status()
        turn_id, stream = await _running_turn(c.http, owner.url, session)
        await c.kill(owner)
        killed = time.perf_counter()
        await stream
        deadline = time.monotonic() + FAILOVER_DEADLINE
        served = False
        while time.monotonic() < deadline:
            status = await _reply_status(c.http, survivors[0].url, session, turn_id)
            if status is not None:
                result.to_failed.append((time.perf_counter() - killed) * 1000)
                answer = await c.http.post(
                    f"{survivors[-1].url}/api/chat", json={"message": "served again?", "sessionId": session}
                )
                if answer.status_code == 200 and answer.json().get("status") == "complete":
                    result.to_served.append((time.perf_counter() - killed) * 1000)
                    served = True
                break
            await asyncio.sleep(0.02)  # a process died: nothing to wait on but the store
        await c.restart(owner)
        await c.stamps()
        if not served:
            result.not_served += 1
            break  # the directory is not there (yet): more kills would only wait out the deadline
    return result


def failover_report(result: Failover, kills: int) -> str:
    def cell(values: list[float]) -> list[str]:
        if not values:
            return ["0", "n/a", "n/a"]
        s = Summary.of(values)
        return [str(s.n), f"{s.p50:.0f}", f"{s.max:.0f}"]

    rows = [
        ["kill -9 -> reply listed failed", *cell(result.to_failed)],
        ["kill -9 -> a new turn on a survivor completed", *cell(result.to_served)],
    ]
    note = ""
    if result.not_served:
        note = (
            f"\n(not served again within {FAILOVER_DEADLINE:.0f} s after a kill: n/a; "
            f"{kills - result.attempts} of {kills} kills skipped)"
        )
    return table(["from kill -9 of the owner", "n", "p50 ms", "max ms"], rows) + note


# -- main -----------------------------------------------------------------------------------------


async def _main(quick: bool) -> None:
    rounds, turns, handoffs, kills = (2, 30, 5, 3) if quick else (5, 90, 20, 10)
    async with cluster(3) as c:
        print(f"\n## Fan-out of one turn's events to {FANOUT_SOCKETS} sockets, ms ({rounds} rounds each)\n")
        cases = [await fanout(c, 1, rounds), await fanout(c, 3, rounds)]
        print(fanout_report(cases))
        p99 = [Summary.of(case.latencies).p99 for case in cases]
        print(f"\np99 across 3 nodes vs on 1 node: {ratio(p99[1], p99[0])}")

        print(f"\n## Throughput of streamed turns on new sessions, {turns} at once per row\n")
        rows = [await throughput(c, n, turns) for n in (1, 2, 3)]
        print(throughput_report(rows))

        direct, handed = await handoff(c, handoffs)
        print(
            f"\n## A session's turn sent to its owner vs to another node ({handoffs} each, one at a time)\n"
        )
        d, h = Summary.of(direct), Summary.of(handed)
        print(
            table(
                ["sent to", "n", "first chunk p50 ms", "p95 ms", "max ms"],
                [
                    ["the owner (node-1)", str(d.n), f"{d.p50:.1f}", f"{d.p95:.1f}", f"{d.max:.1f}"],
                    ["another node (node-2)", str(h.n), f"{h.p50:.1f}", f"{h.p95:.1f}", f"{h.max:.1f}"],
                ],
            )
        )
        print(f"\nadded by the hand-off, p50: {h.p50 - d.p50:.1f} ms ({ratio(h.p50, d.p50)})")

        print(f"\n## Failover: kill -9 of a session's owner during its turn (up to {kills} kills)\n")
        print(failover_report(await failover(c, kills), kills))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    args = parser.parse_args()
    for line in machine():
        print(line)
    print(f"clock: {check_shared_clock()}; load average at start: {os.getloadavg()[0]:.2f}")
    run_loop(_main(args.quick))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
