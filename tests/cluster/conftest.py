"""Several real `parley serve` processes on one PostgreSQL database, one Redis and one upstream.

Each node is started as a user starts it (`python -m parley.cli serve`, the env of
tests/test_serve_hardening.py plus the cluster's settings), so what is tested is the processes
talking through PostgreSQL and Redis, not an in-process imitation. All nodes share one
OpenAI-compatible stand-in (in a thread of the test process) whose `#hold:NAME` trigger keeps a
reply mid-stream until the test releases it (`cluster.holds`).

Waiting: tests wait on WebSocket events and the stand-in's signals. Deadlines exist only where a
process boundary leaves nothing else to wait on (a node's start, a node's death, a failover).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from websockets.asyncio.client import ClientConnection, connect

from parley.standins import openai as openai_standin
from parley.standins.server import BackgroundServer, free_port
from tests.conftest import require_package, require_service
from tests.store.conftest import PG_ADMIN_URL, PG_HOST, PG_PORT, _admin
from tests.test_serve_hardening import _env

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: Logical databases 7-15 are these tests' alone (the bus tests use db 0 with a key prefix of their
#: own, bench/cluster.py uses 6). Each cluster reserves one of them (a key in db 0), so test runs
#: going on at once never share a db, and FLUSHDBs it before and after: the nodes' keys have no
#: prefix of their own, and a flush by another run would drop this one's leases.
CLUSTER_DBS = range(7, 16)
RESERVATION_SECONDS = 1800
NODES = 3
#: a node's start: banner, migrations and the first /healthz (a process boundary)
START_DEADLINE = 60.0
#: PARLEY_AUTH=none is one user: its default rates and caps would refuse a test's burst of turns
#: and sockets long before it checks anything (bench/common.py UNLIMITED, plus sockets and sessions).
UNLIMITED = {
    "PARLEY_RATE_CHAT": "1000000/minute",
    "PARLEY_MAX_SESSIONS_PER_USER": "1000000",
    "PARLEY_MAX_SOCKETS_PER_USER": "100000",
    "PARLEY_NEW_SESSIONS_RATE_LIMIT": "1000000/minute",
    # the 40-turn burst to one session must queue, not be refused
    "PARLEY_MAX_QUEUED_TURNS": "256",
}
#: every prompt carries the whole conversation, so the upstream's request log shows what history
#: each turn ran on (tests/cluster/test_turns.py)
WHOLE_HISTORY = {"PARLEY_HISTORY_LIMIT": "1000"}


@dataclass
class Node:
    """One `parley serve` process; `logs` holds every stderr line it wrote."""

    index: int
    port: int
    proc: subprocess.Popen[str]
    logs: list[str] = field(default_factory=list)
    _banner: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, session: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?sessionId={session}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, connections drop as in a crash."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reap()

    def stop(self) -> None:
        """A graceful stop (SIGTERM), killed if it takes longer than 20 s."""
        if self.alive:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap()

    def _reap(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=10)  # the pipe ends with the process
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.logs.append(line.rstrip("\n"))
            if "serving on" in line:
                self._banner.set()
        self._banner.set()  # the process ended: stop waiting for a banner it will not print

    def wait_ready(self, deadline: float) -> None:
        self._banner.wait(max(0.0, deadline - time.monotonic()))
        assert self.alive, f"{self.name} exited with {self.proc.returncode}:\n" + "\n".join(self.logs)
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.alive and time.monotonic() < deadline, f"{self.name} not ready:\n" + "\n".join(
                self.logs
            )
            time.sleep(0.05)  # a process boundary: nothing to wait on but the port


@dataclass
class Cluster:
    nodes: list[Node]
    upstream: BackgroundServer
    holds: openai_standin.Holds
    database_url: str
    redis_url: str
    root: Path
    #: settings every node gets besides the harness's own
    extra: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    @property
    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.alive]

    def env(self, index: int, port: int) -> dict[str, str]:
        return _env(
            self.root / f"node-{index}",
            {
                "PARLEY_PORT": str(port),
                "PARLEY_DATABASE_URL": self.database_url,
                "PARLEY_REDIS_URL": self.redis_url,
                "PARLEY_NODE_ID": f"node-{index}",
                "PARLEY_LLM": "openai",
                "PARLEY_LLM_BASE_URL": f"{self.upstream.url}/v1",
                "PARLEY_LLM_API_KEY": "cluster-test",
                "PARLEY_AUTH": "none",
                "PARLEY_LOG_LEVEL": "INFO",
                **UNLIMITED,
                **WHOLE_HISTORY,
                **self.extra,
            },
        )

    def spawn(self, index: int) -> Node:
        """Start node `index` (not yet ready: `wait_ready`); its data dir is its own."""
        port = free_port()
        (self.root / f"node-{index}").mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(index, port),
            cwd=self.root / f"node-{index}",
        )
        node = Node(index, port, proc)
        node._reader = threading.Thread(target=node._pump, name=f"logs:{node.name}", daemon=True)
        node._reader.start()
        return node

    def logs(self) -> str:
        return "\n".join(
            f"--- {node.name} (port {node.port}, exit {node.proc.returncode}) ---\n" + "\n".join(node.logs)
            for node in self.nodes
        )


def _flush_redis(url: str) -> None:
    client = Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def redis_db() -> Iterator[str]:
    """The URL of a Redis logical db reserved for this cluster alone, flushed before and after."""
    admin = Redis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    token = secrets.token_hex(8)
    try:
        for db in CLUSTER_DBS:
            key = f"parley-test:cluster-db:{db}"
            if admin.set(key, token, nx=True, ex=RESERVATION_SECONDS):
                break
        else:
            pytest.fail(f"every Redis db for cluster tests ({CLUSTER_DBS}) is reserved by other runs")
        url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
        _flush_redis(url)
        try:
            yield url
        finally:
            _flush_redis(url)
            if admin.get(key) == token.encode():  # only our own reservation
                admin.delete(key)
    finally:
        admin.close()


def start_cluster(
    root: Path, count: int = NODES, redis_url: str | None = None, extra: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """`count` nodes on a fresh database and a Redis db of their own; everything removed after.
    `redis_url`: a Redis the caller owns alone (a private server) instead of a reserved db;
    `extra`: more settings for every node."""
    require_package("asyncpg", "the PostgreSQL store")
    require_service(PG_HOST, PG_PORT, "PostgreSQL, for the cluster tests")
    if redis_url is None:
        require_service(REDIS_HOST, REDIS_PORT, "Redis, for the cluster tests")
    name = "parley_cluster_" + secrets.token_hex(6)
    with redis_db() if redis_url is None else nullcontext(redis_url) as url:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        holds = openai_standin.Holds()
        upstream = BackgroundServer(openai_standin.create_app(holds=holds)).start()
        database_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        cluster = Cluster([], upstream, holds, database_url, url, root, dict(extra or {}))
        try:
            # all at once, as a deployment starts them: the migrations' lock is exercised too
            cluster.nodes = [cluster.spawn(index) for index in range(1, count + 1)]
            deadline = time.monotonic() + START_DEADLINE
            for node in cluster.nodes:
                node.wait_ready(deadline)
            yield cluster
        finally:
            holds.release_all()  # no held reply keeps a node's graceful stop waiting
            for node in cluster.nodes:
                if node.alive:
                    node.proc.terminate()
            for node in cluster.nodes:
                node.stop()
            upstream.stop()
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes shared by a module's tests (each test uses session ids of its own)."""
    yield from start_cluster(tmp_path_factory.mktemp("cluster"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test shows every node's log (its stderr) beside the traceback."""
    report = yield
    found = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(found, Cluster):
        report.sections.append(("cluster logs", found.logs()))
    return report


def session_id(label: str) -> str:
    return f"cluster-{label}-{secrets.token_hex(4)}"


# -- talking to the nodes -------------------------------------------------------------------------

#: the events that end a turn, for every socket of its session
TURN_ENDS = frozenset({"reply", "cancelled", "error", "interrupted"})


async def open_socket(node: Node, session: str) -> ClientConnection:
    """A WebSocket on `session` at `node`, subscribed (its `connected` event came)."""
    ws = await connect(node.ws_url(session), max_size=None)
    first = json.loads(await ws.recv())
    assert first["type"] == "connected", first
    return ws


async def turn_events(ws: ClientConnection, turn_id: str) -> list[dict[str, Any]]:
    """The events of turn `turn_id` this socket receives, up to the one that ends it."""
    seen: list[dict[str, Any]] = []
    while True:
        event = json.loads(await ws.recv())
        if event.get("turnId") != turn_id:
            continue  # another turn's, or the session's (title, transcription)
        seen.append(event)
        if event["type"] in TURN_ENDS:
            return seen


async def sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """The events of a `POST /api/chat` stream (`event:` / `data:` pairs), as they come."""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def prompts(cluster: Cluster, messages: set[str]) -> dict[str, list[tuple[str, str]]]:
    """The conversation (role, content; no system prompt) the upstream was sent for each turn
    whose user message is one of `messages`, by that message."""
    found: dict[str, list[tuple[str, str]]] = {}
    for request in cluster.upstream.app.state.requests:
        body = request.get("json")
        if request["path"] != "/v1/chat/completions" or not isinstance(body, dict):
            continue
        sent = [(m["role"], m["content"]) for m in body["messages"] if m["role"] != "system"]
        if sent and sent[-1] == ("user", sent[-1][1]) and sent[-1][1] in messages:
            assert sent[-1][1] not in found, f"the upstream was asked twice for {sent[-1][1]!r}"
            found[sent[-1][1]] = sent
    return found


async def history(http: httpx.AsyncClient, node: Node, session: str) -> list[dict[str, Any]]:
    response = await http.get(f"{node.url}/api/history", params={"sessionId": session})
    response.raise_for_status()
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages
