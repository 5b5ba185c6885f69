"""`parley serve --workers 2` on PostgreSQL and Redis: two worker processes on one port, each a node.

The harness (tests/cluster/conftest.py) gives a fresh database, a flushed Redis db 7 and the
OpenAI stand-in; the one process started here is `parley serve --workers 2`, as a user starts it.
Which worker accepts a connection is the kernel's choice, so the test sends turns on new sessions
until each worker holds the lease of one of them (Redis names the holder), with a cap.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from parley.standins.server import free_port
from tests.cluster.conftest import (
    START_DEADLINE,
    Cluster,
    Node,
    history,
    open_socket,
    session_id,
    sse_events,
    start_cluster,
    turn_events,
)

READY = re.compile(r"\bready node=(\S+) ")
#: a lease's value is the holder's instance name: its node id, '-', 8 hex digits
INSTANCE = re.compile(r"^(.+)-[0-9a-f]{8}$")
#: turns on new sessions sent before giving up on seeing both workers hold one
MAX_TURNS = 80
ROUND = 8


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Node]]:
    """One `parley serve --workers 2` (configured node id `node-1`) on the harness's database."""
    for cluster in start_cluster(tmp_path_factory.mktemp("workers"), count=0):
        port = free_port()
        root = cluster.root / "node-1"
        root.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "serve", "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=cluster.env(1, port),
            cwd=root,
        )
        node = Node(1, port, proc)
        node._reader = threading.Thread(target=node._pump, name="logs:workers", daemon=True)
        node._reader.start()
        cluster.nodes.append(node)  # stopped (SIGTERM: the parent stops its workers) by the harness
        deadline = time.monotonic() + START_DEADLINE
        node.wait_ready(deadline)
        # a process boundary: the second worker's start shows only in its log
        while len(ready_ids(node)) < 2:
            assert node.alive and time.monotonic() < deadline, "\n".join(node.logs)
            time.sleep(0.05)
        yield cluster, node


def ready_ids(node: Node) -> list[str]:
    return [match.group(1) for line in list(node.logs) if (match := READY.search(line))]


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s+(\d+)$", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


def lease_holders(redis_url: str) -> dict[str, str]:
    """The node id holding each session's lease, by lease key."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = list(client.scan_iter("parley:lease:*"))
        values = client.mget(keys) if keys else []
    finally:
        client.close()
    holders = {}
    for key, value in zip(keys, values, strict=True):
        if value is not None:
            match = INSTANCE.match(str(value))
            assert match, value
            holders[key] = match.group(1)
    return holders


def test_each_worker_is_a_process_of_the_parent_with_a_node_id_of_its_own(
    served: tuple[Cluster, Node],
) -> None:
    _cluster, node = served
    ids = ready_ids(node)
    assert len(ids) == 2 and len(set(ids)) == 2, ids
    pids = set()
    for found in ids:
        match = re.fullmatch(r"node-1-(\d+)", found)
        assert match, f"{found!r} is not the configured node id plus '-<pid>'"
        pid = int(match.group(1))
        assert pid != node.proc.pid and parent_of(pid) == node.proc.pid, found
        pids.add(pid)
    assert len(pids) == 2


async def turn(http: httpx.AsyncClient, url: str, session: str, message: str) -> str:
    """A streamed turn on a connection of its own; the reply it ended with."""
    payload = {"sessionId": session, "message": message, "stream": True}
    async with http.stream("POST", f"{url}/api/chat", json=payload) as response:
        assert response.status_code == 200, await response.aread()
        events = [event async for event in sse_events(response)]
    assert events and events[-1]["type"] == "reply", events
    return str(events[-1]["response"])


async def test_both_workers_run_turns_and_events_reach_sockets_on_either(
    served: tuple[Cluster, Node],
) -> None:
    cluster, node = served
    workers = set(ready_ids(node))
    sessions: list[str] = []
    held: set[str] = set()
    # a new client per turn: a new connection, which either worker may accept
    while held != workers:
        assert len(sessions) < MAX_TURNS, f"after {len(sessions)} turns only {held} held a session"
        batch = [session_id("workers") for _ in range(ROUND)]

        async def one(session: str) -> str:
            async with httpx.AsyncClient(timeout=None) as http:
                return await turn(http, node.url, session, f"hello {session}")

        replies = await asyncio.gather(*(one(session) for session in batch))
        assert replies == [f"You said: hello {session}" for session in batch]
        sessions += batch
        held = set(lease_holders(cluster.redis_url).values())
        assert held <= workers, (held, workers)

    # Sockets of one session on new connections (either worker), a turn from yet another: every
    # socket gets the whole turn, which only the Redis bus can carry from one worker to the other.
    session = session_id("workers-fanout")
    sockets = [await open_socket(node, session) for _ in range(4)]
    try:
        async with httpx.AsyncClient(timeout=None) as http:
            payload = {"sessionId": session, "message": "to every socket", "stream": True}
            async with http.stream("POST", f"{node.url}/api/chat", json=payload) as response:
                assert response.status_code == 200, await response.aread()
                turn_id = response.headers["x-turn-id"]
                seen = await asyncio.gather(*(turn_events(ws, turn_id) for ws in sockets))
                streamed = [event async for event in sse_events(response)]
            for events in seen:
                assert events[-1]["type"] == "reply", events
                assert events[-1]["response"] == "You said: to every socket"
            assert streamed[-1]["response"] == "You said: to every socket"
            stored = await history(http, node, session)
            assert [(m["role"], m["content"], m["status"]) for m in stored] == [
                ("user", "to every socket", "complete"),
                ("assistant", "You said: to every socket", "complete"),
            ]
    finally:
        for ws in sockets:
            await ws.close()
