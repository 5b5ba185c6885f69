"""Full-text search on SQLite: latency over 100,000 and 1,000,000 stored messages, and what the index
adds to a turn's store writes.

    .venv/bin/python bench/search.py [--quick] [--sizes 100000,1000000] [--queries 60] [--turns 1500]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

The database is built with executemany in one transaction (triggers on, as in production): words
drawn from a Zipf-distributed vocabulary of 30,000 made-up words, 6-60 words a message, sessions
of 100 messages owned round-robin by 10 users; searches run as one of them through
`SQLiteStore.search` (aiosqlite, as the API calls it), for rare, mid and common words, two words, a
phrase taken from a stored message, and a prefix. Write cost: the same turn writes (begin_turn, two
partial saves, finish) on copies of the 100,000-message database with every trigger, without the
FTS5 triggers, and without any of the sessions' and index's triggers, round-robin in blocks, as
ratios within the run. The index's batches (store/sqlite_conversations.py: a batch every
INDEX_BATCH finished messages, and what is left at the end) are timed as part of the turns that
write them. Goals: p95 under 50 ms at 1,000,000 messages; under 5% added to a turn's
writes.

With `--postgres <admin URL>` the same messages are also loaded into a database of their own there
(made and dropped by the bench; COPY, then the GIN index built once, as the migration's backfill
would) and searched through `PostgresStore.search`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, percentile, table
from parley.store.base import MessageStatus
from parley.store.conversations import parse_query
from parley.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from parley.store.postgres import PostgresStore

VOCABULARY = 30_000
USERS = 10
PER_SESSION = 100
SYLLABLES = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"]


def vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words, key=lambda _: rng.random())  # rank order: index 0 is the commonest


def build(path: Path, count: int, words: list[str], rng: random.Random) -> float:
    """`count` messages, in one transaction; returns seconds."""
    started = time.perf_counter()
    store = SQLiteStore(path)
    asyncio.run(_open_close(store))  # the schema, by the store's own migrations
    weights = [1 / (rank + 1) for rank in range(len(words))]
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-400000")
    # The index is built in one pass after the rows (what the migration's backfill does), not row
    # by row through its trigger: the same index, built in a fraction of the time.
    (trigger,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_fts_insert'").fetchone()
    db.execute("DROP TRIGGER messages_fts_insert")
    now = time.time() - count

    def rows() -> object:
        batch = 10_000
        for start in range(0, count, batch):
            n = min(batch, count - start)
            lengths = [rng.randint(6, 60) for _ in range(n)]
            drawn = rng.choices(words, weights, k=sum(lengths))
            at = 0
            for i, length in enumerate(lengths):
                index = start + i
                session = index // PER_SESSION
                yield (
                    f"u{session % USERS}/s{session}",
                    f"t{index // 2}",
                    "user" if index % 2 == 0 else "assistant",
                    " ".join(drawn[at : at + length]),
                    "complete",
                    now + index,
                )
                at += length

    with db:
        db.executemany(
            "INSERT INTO messages (session_id, turn_id, role, content, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            rows(),  # type: ignore[arg-type]
        )
        db.execute(
            "INSERT INTO messages_fts (rowid, content, owner, conversation) "
            "SELECT id, content, owner, conversation FROM messages_searchable"
        )
        db.execute(trigger)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - started


async def _open_close(store: SQLiteStore) -> None:
    await store.open()
    await store.aclose()


def queries(words: list[str], path: Path, rng: random.Random, n: int) -> dict[str, list[str]]:
    db = sqlite3.connect(path)
    samples = [str(r[0]) for r in db.execute("SELECT content FROM messages ORDER BY random() LIMIT ?", (n,))]
    db.close()
    phrases = []
    for text in samples:
        parts = text.split()
        at = rng.randrange(len(parts) - 1)
        phrases.append(f'"{parts[at]} {parts[at + 1]}"')
    return {
        "rare word (rank 5k-30k)": [rng.choice(words[5000:]) for _ in range(n)],
        "mid word (rank 200-2k)": [rng.choice(words[200:2000]) for _ in range(n)],
        "common word (rank 10-100)": [rng.choice(words[10:100]) for _ in range(n)],
        "two mid words": [f"{rng.choice(words[200:2000])} {rng.choice(words[200:2000])}" for _ in range(n)],
        "phrase": phrases,
        "prefix (4 letters)*": [rng.choice(words[200:5000])[:4] + "*" for _ in range(n)],
    }


async def search_latency(
    path: Path, kinds: dict[str, list[str]], pg_url: str | None = None
) -> list[list[str]]:
    store: SQLiteStore | PostgresStore
    if pg_url is None:
        store = SQLiteStore(path)
    else:
        from parley.store.postgres import PostgresStore

        store = PostgresStore(pg_url)
    await store.open()
    rows: list[list[str]] = []
    every: list[float] = []
    try:
        for q in next(iter(kinds.values()))[:5]:  # warm the page cache
            await store.search("u0", parse_query(q), limit=20)
        for kind, qs in kinds.items():
            times, found = [], 0
            for q in qs:
                started = time.perf_counter()
                hits = await store.search("u0", parse_query(q), limit=20)
                times.append((time.perf_counter() - started) * 1000)
                found += len(hits)
            every += times
            times.sort()
            rows.append(
                [
                    kind,
                    str(len(qs)),
                    f"{percentile(times, 50):.1f}",
                    f"{percentile(times, 95):.1f}",
                    f"{found / len(qs):.1f}",
                ]
            )
    finally:
        await store.aclose()
    every.sort()
    rows.append(["all", str(len(every)), f"{percentile(every, 50):.1f}", f"{percentile(every, 95):.1f}", ""])
    return rows


FTS_TRIGGERS = ("messages_fts_insert", "messages_fts_update", "messages_fts_delete")
ALL_TRIGGERS = (*FTS_TRIGGERS, "messages_touch_session")


async def write_cost(base: Path, turns: int, words: list[str], rng: random.Random) -> list[list[str]]:
    variants = {"sessions + FTS5 index (batched)": (), "without FTS5 triggers": FTS_TRIGGERS}
    variants["without any of their triggers"] = ALL_TRIGGERS
    stores: dict[str, SQLiteStore] = {}
    for i, (name, dropped) in enumerate(variants.items()):
        path = base.with_name(f"writes{i}.db")
        shutil.copy(base, path)
        db = sqlite3.connect(path)
        for trigger in dropped:
            db.execute(f"DROP TRIGGER {trigger}")
        db.commit()
        db.close()
        stores[name] = SQLiteStore(path)
        await stores[name].open()
    spent: dict[str, list[float]] = {name: [] for name in variants}
    common = words[:3000]
    try:
        block = 50
        for start in range(0, turns, block):
            for name, store in stores.items():
                for i in range(start, min(turns, start + block)):
                    user = " ".join(rng.choices(common, k=20))
                    reply = " ".join(rng.choices(common, k=120))
                    key = f"u0/bench{i // 10}"
                    began = time.perf_counter()
                    _, pending = await store.begin_turn(key, f"w{i}", user)
                    await store.save_partial(pending.id, reply[:200])
                    await store.save_partial(pending.id, reply[:500])
                    await store.finish_message(pending.id, reply, MessageStatus.COMPLETE)
                    spent[name].append((time.perf_counter() - began) * 1e6)
        for name, store in stores.items():  # what is still queued is indexed on the last turn
            began = time.perf_counter()
            await store.index_queued()
            spent[name][-1] += (time.perf_counter() - began) * 1e6
    finally:
        for store in stores.values():
            await store.aclose()
    no_fts = sorted(spent["without FTS5 triggers"])
    none = sorted(spent["without any of their triggers"])
    rows = []
    for name, times in spent.items():
        times.sort()
        rows.append(
            [
                name,
                str(len(times)),
                f"{_mean(times):.0f}",
                f"{percentile(times, 50):.0f}",
                f"{percentile(times, 50) / percentile(no_fts, 50):.3f}",
                f"{_mean(times) / _mean(no_fts):.3f}",
                f"{_mean(times) / _mean(none):.3f}",
            ]
        )
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


async def load_postgres(admin_url: str, name: str, sqlite_path: Path) -> tuple[str, float]:
    """The SQLite database's messages in a new PostgreSQL database `name`; its URL and seconds."""
    import asyncpg  # type: ignore[import-untyped]

    from parley.store.postgres import PostgresStore

    started = time.perf_counter()
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    store = PostgresStore(url)
    await store.open()  # the schema, by the store's own migrations
    await store.aclose()
    db = sqlite3.connect(sqlite_path)
    rows = db.execute(
        "SELECT id * 2 - 1, session_id, turn_id, role, content, status, created_at FROM messages"
    )
    conn = await asyncpg.connect(url)
    try:
        (index,) = [
            r[0]
            for r in await conn.fetch("SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_search'")
        ]
        await conn.execute("DROP INDEX messages_search")
        while batch := rows.fetchmany(50_000):
            await conn.copy_records_to_table(
                "messages",
                records=batch,
                columns=["id", "session_id", "turn_id", "role", "content", "status", "created_at"],
            )
        await conn.execute(index)
        await conn.execute("SELECT setval(pg_get_serial_sequence('messages', 'id'), max(id)) FROM messages")
        await conn.execute("VACUUM ANALYZE messages")
        await conn.execute("ANALYZE sessions")
    finally:
        await conn.close()
        db.close()
    return url, time.perf_counter() - started


async def drop_postgres(admin_url: str, name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 messages only, fewer queries and turns")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--turns", type=int, default=1500)
    parser.add_argument(
        "--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None, help="where the databases go"
    )
    parser.add_argument("--postgres", default=None, help="an admin URL: search PostgreSQL too")
    args = parser.parse_args()
    sizes = [100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    n_queries = 20 if args.quick else args.queries
    turns = 300 if args.quick else args.turns
    rng = random.Random(14)
    words = vocabulary(rng)
    print("# Search on SQLite (FTS5)\n")
    print("\n".join(f"- {line}" for line in machine()))
    print(f"- databases in {args.dir or tempfile.gettempdir()}")
    with tempfile.TemporaryDirectory(prefix="parley-search-", dir=args.dir) as tmp:
        first: Path | None = None
        for size in sizes:
            path = Path(tmp) / f"m{size}.db"
            seconds = build(path, size, words, rng)
            first = first or path
            mb = path.stat().st_size / 1e6
            print(f"\n## {size:,} messages (built in {seconds:.1f} s, {mb:.0f} MB)\n")
            kinds = queries(words, path, rng, n_queries)
            rows = asyncio.run(search_latency(path, kinds))
            print(table(["query", "n", "p50 ms", "p95 ms", "hits/query (limit 20)"], rows))
            if args.postgres:
                name = f"parley_bench_search_{size}"
                try:
                    url, seconds = asyncio.run(load_postgres(args.postgres, name, path))
                    print(f"\n### PostgreSQL, the same {size:,} messages (loaded in {seconds:.1f} s)\n")
                    rows = asyncio.run(search_latency(path, kinds, url))
                    print(table(["query", "n", "p50 ms", "p95 ms", "hits/query (limit 20)"], rows))
                finally:
                    asyncio.run(drop_postgres(args.postgres, name))
        assert first is not None
        print(
            f"\n## A turn's store writes ({turns} turns each, on copies of the {sizes[0]:,}-message database)\n"
        )
        print("begin_turn + 2 partial saves + finish (a 20-word message, a 120-word reply), microseconds:\n")
        rows = asyncio.run(write_cost(first, turns, words, rng))
        print(
            table(
                ["schema", "turns", "mean µs", "p50 µs", "p50 / no FTS", "mean / no FTS", "mean / none"], rows
            )
        )


if __name__ == "__main__":
    main()
