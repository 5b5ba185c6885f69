"""The store's cost per turn: SQLite against PostgreSQL, side by side in one run.

    .venv/bin/python bench/store.py [--turns 200] [--partials 5] [--rounds 3]

A turn is what a session writes: `begin_turn` (the user message and the pending reply), `save_partial`
N times (the text so far, as a long reply stores it once a second) and `finish_message`. With 1 and
with 20 sessions writing at once, each session running its turns one after another. SQLite is a file
in a temporary directory; PostgreSQL a fresh database on 127.0.0.1:5432, dropped after. Rounds
alternate the backends so drift on this noisy machine hits both alike. Prints markdown: per-turn
p50 / p95 and turns/s, and PostgreSQL's figures as ratios to SQLite's.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg  # type: ignore[import-untyped]

from common import machine, percentile, ratio, run_loop, table
from parley.store.base import MessageStatus, Store
from parley.store.postgres import PostgresStore
from parley.store.sqlite import SQLiteStore

CONCURRENCY = (1, 20)


async def one_session(store: Store, session: str, turns: int, partials: int, out: list[float]) -> None:
    text = ""
    for t in range(turns):
        start = time.perf_counter()
        _, reply = await store.begin_turn(session, f"t{t}", f"question {t}")
        for p in range(partials):
            text += f" word{p}"
            await store.save_partial(reply.id, text)
        await store.finish_message(reply.id, text, MessageStatus.COMPLETE, finish_reason="stop")
        out.append(time.perf_counter() - start)


def cpu() -> float:
    """CPU seconds of this process so far, every thread (aiosqlite's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    store: Store, sessions: int, turns: int, partials: int, tag: str
) -> tuple[list[float], float, float]:
    """(per-turn latencies, turns per second, this process's CPU seconds per turn) of `sessions`
    sessions writing at once."""
    latencies: list[float] = []
    start, cpu_start = time.perf_counter(), cpu()
    async with asyncio.TaskGroup() as group:
        for s in range(sessions):
            group.create_task(one_session(store, f"bench/{tag}-{s}", turns, partials, latencies))
    n = len(latencies)
    return latencies, n / (time.perf_counter() - start), (cpu() - cpu_start) / n


PG_ASYNC = "PostgreSQL, synchronous_commit=off"


async def main(args: argparse.Namespace) -> None:
    names = {
        "PostgreSQL": "parley_bench_" + secrets.token_hex(4),
        PG_ASYNC: "parley_bench_" + secrets.token_hex(4),
    }
    admin = await asyncpg.connect(args.postgres)
    for name in names.values():
        await admin.execute(f'CREATE DATABASE "{name}"')
    # what the commit's wait for the WAL flush costs: the same store on a database that does not wait
    await admin.execute(f'ALTER DATABASE "{names[PG_ASYNC]}" SET synchronous_commit = off')
    base = args.postgres.rsplit("/", 1)[0]
    results: dict[tuple[str, int], tuple[list[float], float, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stores: dict[str, Store] = {"SQLite": SQLiteStore(Path(tmp) / "parley.db")}
            for backend, name in names.items():
                stores[backend] = PostgresStore(f"{base}/{name}", pool_size=args.pool)
            for store in stores.values():
                await store.open()
            try:
                for store in stores.values():  # warm-up: connections, prepared statements
                    await measure(store, 20, 2, args.partials, "warm")
                for r in range(args.rounds):
                    order = list(stores.items())
                    order = order[r % len(order) :] + order[: r % len(order)]
                    for sessions in CONCURRENCY:
                        for backend, store in order:
                            turns = max(args.turns // sessions, 1)
                            lat, rate, cpu_turn = await measure(
                                store, sessions, turns, args.partials, f"r{r}"
                            )
                            got_lat, got_rate, got_cpu = results.get((backend, sessions), ([], 0.0, 0.0))
                            results[(backend, sessions)] = (
                                got_lat + lat,
                                got_rate + rate / args.rounds,
                                got_cpu + cpu_turn / args.rounds,
                            )
            finally:
                for store in stores.values():
                    await store.aclose()
    finally:
        for name in names.values():
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()

    rows = []
    for sessions in CONCURRENCY:
        lite_lat, lite_rate, _ = results[("SQLite", sessions)]
        lite_p50 = percentile(sorted(lite_lat), 50)
        for backend in ("SQLite", *names):
            lat, rate, cpu_turn = results[(backend, sessions)]
            ordered = sorted(lat)
            p50, p95 = percentile(ordered, 50), percentile(ordered, 95)
            rows.append(
                [
                    str(sessions),
                    backend,
                    str(len(ordered)),
                    f"{p50 * 1000:.2f}",
                    f"{p95 * 1000:.2f}",
                    ratio(p50, lite_p50),
                    f"{rate:.0f}",
                    ratio(rate, lite_rate),
                    f"{cpu_turn * 1000:.2f}",
                ]
            )
    print("\n".join(f"- {line}" for line in machine()))
    print(
        f"- a turn: begin_turn + {args.partials} x save_partial + finish_message; {args.rounds} rounds, "
        f"PostgreSQL pool of {args.pool}, asyncpg {asyncpg.__version__}; SQLite WAL with "
        "synchronous=NORMAL (no fsync per commit), PostgreSQL as installed (fsync at every commit); "
        "the CPU column is this process only (the client, and SQLite's thread), not PostgreSQL's\n"
    )
    headers = [
        "sessions",
        "backend",
        "turns",
        "p50 ms",
        "p95 ms",
        "p50 / SQLite",
        "turns/s",
        "turns/s / SQLite",
        "bench CPU ms/turn",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=200, help="turns per round and concurrency")
    parser.add_argument("--partials", type=int, default=5, help="save_partial calls per turn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=10, help="PostgreSQL pool size")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    run_loop(main(parser.parse_args()))
