"""Redis restarted during traffic: the nodes reconnect and resume; no session gets two writers.

The cluster runs on a private redis-server of this module's own (never the shared one on 6379),
killed with SIGKILL and started again, empty, on the same port: every lease, inbox and bus stream
is gone. The fencing tokens live in PostgreSQL, so a take after the restart gets a higher fence.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis import Redis
from redis.exceptions import RedisError

from parley.standins.server import free_port
from tests.cluster.conftest import (
    Cluster,
    history,
    open_socket,
    prompts,
    session_id,
    sse_events,
    start_cluster,
    turn_events,
)
from tests.conftest import require_tool

#: a redis-server's start (a process boundary: nothing to wait on but its port)
REDIS_DEADLINE = 30.0
BURST = 12
#: no RDB, no AOF: a restarted server starts empty
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


@dataclass
class PrivateRedis:
    """A redis-server process of this module alone, no persistence: a restart comes back empty."""

    binary: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        log = (self.root / f"redis-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *NO_PERSISTENCE,
                "--dir",
                str(self.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + REDIS_DEADLINE
        while True:
            assert self.proc.poll() is None, (self.root / f"redis-{self.starts}.log").read_text()
            client = Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
            try:
                if client.ping():
                    return
            except RedisError:
                pass
            finally:
                client.close()
            assert time.monotonic() < deadline, f"redis-server on {self.port} does not answer PING"
            time.sleep(0.05)  # a process boundary: nothing to wait on but the port

    def kill(self) -> None:
        """SIGKILL: no save, no goodbye to its clients."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def keys(self) -> int:
        client = Redis(host="127.0.0.1", port=self.port)
        try:
            return int(client.dbsize())
        finally:
            client.close()

    def run_id(self) -> str:
        client = Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        try:
            return str(client.info("server")["run_id"])
        finally:
            client.close()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    binary = require_tool("redis-server", "a Redis of the restart test's own")
    server = PrivateRedis(binary, free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, private_redis: PrivateRedis) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory.mktemp("cluster"), count=3, redis_url=private_redis.url)


def said(message: str) -> str:
    return "You said: " + message


async def fence(cluster: Cluster, session: str) -> int:
    """The session's fencing token in the cluster's database (keys are `<owner>/<session id>`)."""
    conn = await asyncpg.connect(cluster.database_url)
    try:
        rows = await conn.fetch("SELECT session, fence FROM fences")
    finally:
        await conn.close()
    found = [int(row["fence"]) for row in rows if str(row["session"]).rpartition("/")[2] == session]
    assert len(found) == 1, rows
    return found[0]


async def chat(http: httpx.AsyncClient, cluster: Cluster, node: int, session: str, message: str) -> str:
    """Send a turn through node `node`; it must complete. Its turn id."""
    response = await http.post(
        f"{cluster[node].url}/api/chat", json={"sessionId": session, "message": message}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert (body["status"], body["response"]) == ("complete", said(message)), body
    return str(body["turnId"])


def assert_strict_order(cluster: Cluster, stored: list[dict[str, Any]], expected_users: list[str]) -> None:
    """Every acknowledged message exactly once, each reply right after its own user message and
    complete, and each turn run on the whole conversation before it (one writer at a time)."""
    users = [m["content"] for m in stored if m["role"] == "user"]
    assert sorted(users) == sorted(expected_users), [(m["role"], m["content"]) for m in stored]
    assert len(stored) == 2 * len(expected_users), [(m["role"], m["content"]) for m in stored]
    for user, reply in zip(stored[::2], stored[1::2], strict=True):
        assert (user["role"], reply["role"]) == ("user", "assistant"), (user, reply)
        assert reply["turnId"] == user["turnId"], (user, reply)
        assert (reply["content"], reply["status"]) == (said(user["content"]), "complete"), reply
    assert [m["id"] for m in stored] == sorted(m["id"] for m in stored)
    conversation = [(m["role"], m["content"]) for m in stored]
    sent = prompts(cluster, set(expected_users))
    assert len(sent) == len(expected_users)
    for index in range(0, len(conversation), 2):
        assert sent[conversation[index][1]] == conversation[: index + 1], (
            f"turn {index // 2} ran beside another"
        )


def restart(server: PrivateRedis) -> None:
    """SIGKILL the Redis and start an empty one on its port: leases, inboxes and streams gone."""
    assert server.keys() > 0
    old = server.run_id()
    server.kill()
    server.start()
    # a new process (what it holds now the nodes wrote since: they reconnect at once)
    assert server.run_id() != old


async def test_redis_restarted_empty_the_nodes_resume_and_no_session_gets_two_writers(
    cluster: Cluster, private_redis: PrivateRedis
) -> None:
    one, two = session_id("restart-one"), session_id("restart-two")
    async with httpx.AsyncClient(timeout=None) as http:
        # session one is watched on nodes 2 and 3 and owned by node 1 (its first turn); session
        # two is owned by node 2 and watched on nodes 1 and 3, from after its first turn
        before: dict[str, list[str]] = {one: [], two: ["two before the restart"]}
        across = {one: [await open_socket(cluster[1], one), await open_socket(cluster[2], one)]}
        sockets = list(across[one])
        try:
            await chat(http, cluster, 1, two, before[two][0])
            across[two] = [await open_socket(cluster[0], two), await open_socket(cluster[2], two)]
            sockets += across[two]
            for owner, session in ((0, one), (1, two)):
                message = f"{session} before the restart"
                turn = await chat(http, cluster, owner, session, message)
                before[session].append(message)
                seen = [await turn_events(ws, turn) for ws in across[session]]
                assert seen[0] == seen[1] and seen[0][-1]["type"] == "reply", seen
            fences = {session: await fence(cluster, session) for session in (one, two)}

            restart(private_redis)

            # no node crashed; each still answers
            for node in cluster.nodes:
                assert node.alive, cluster.logs()
                assert (await http.get(f"{node.url}/healthz")).status_code == 200

            # a new turn through a node that did not own the session; sockets opened after the
            # restart on two other nodes, and those open across it, see the same events in order
            fresh = [await open_socket(cluster[0], one), await open_socket(cluster[1], one)]
            sockets += fresh
            after = "one after the restart"
            turn = await chat(http, cluster, 2, one, after)
            seen_fresh = [await turn_events(ws, turn) for ws in fresh]
            assert seen_fresh[0] == seen_fresh[1] and seen_fresh[0][-1]["type"] == "reply", seen_fresh
            assert seen_fresh[0][-1]["message"]["content"] == said(after), seen_fresh[0][-1]
            seen_across = [await turn_events(ws, turn) for ws in across[one]]
            assert seen_across == [seen_fresh[0], seen_fresh[0]], seen_across
            before[one].append(after)

            # session two: a burst through all three nodes at once, its owner's lease gone
            burst = [f"two burst {i} via node {i % 3 + 1}" for i in range(BURST)]
            await asyncio.gather(*(chat(http, cluster, i % 3, two, m) for i, m in enumerate(burst)))
            before[two] += burst

            for session in (one, two):
                for node in cluster.nodes:
                    assert_strict_order(cluster, await history(http, node, session), before[session])
            # session one was taken after the restart by a node that did not own it: a new fence,
            # above any before (fences live in PostgreSQL, not in the Redis that was lost).
            # (Session two's owner may take it back before its renewal sees the lease gone and
            # keep its fence, still the newest: no bound to check there.)
            assert await fence(cluster, one) > fences[one]
            for node in cluster.nodes:
                assert node.alive, cluster.logs()
        finally:
            for ws in sockets:
                await ws.close()


# A socket opened before anything is stored made the session live on node 3 with an empty
# context; taking the session over must read it again (sessions/cluster.py `_adopt`).
async def test_a_node_that_takes_a_session_over_after_the_restart_runs_on_its_whole_conversation(
    cluster: Cluster, private_redis: PrivateRedis
) -> None:
    session = session_id("restart-context")
    async with httpx.AsyncClient(timeout=None) as http:
        watcher = await open_socket(cluster[2], session)  # node 3 watches before anything is stored
        try:
            first = "the first turn, run by node 1"
            turn = await chat(http, cluster, 0, session, first)
            assert (await turn_events(watcher, turn))[-1]["type"] == "reply"
            restart(private_redis)
            # no node holds the lease now: node 3 takes the session and runs the turn
            after = "the turn after the restart, run by node 3"
            turn = await chat(http, cluster, 2, session, after)
            assert (await turn_events(watcher, turn))[-1]["type"] == "reply"
        finally:
            await watcher.close()
        stored = await history(http, cluster[0], session)
        assert [m["content"] for m in stored if m["role"] == "user"] == [first, after]
        assert prompts(cluster, {after})[after] == [
            ("user", first),
            ("assistant", said(first)),
            ("user", after),
        ]


async def test_a_reply_running_across_the_restart_is_stored_once_and_the_session_goes_on(
    cluster: Cluster, private_redis: PrivateRedis
) -> None:
    """The restart loses the owner's lease mid-reply: a follower may take the session (failing the
    pending reply), the owner may drop it, or finish it. Whichever: stored once, and the next turn
    runs on the conversation as stored. (Events published while Redis is down are lost: a watcher
    on another node may never see this reply end, so it is not waited on.)"""
    session = session_id("restart-inflight")
    hold = "hold-" + session
    async with httpx.AsyncClient(timeout=None) as http:
        await chat(http, cluster, 0, session, "before the held reply")
        watcher = await open_socket(cluster[1], session)
        try:
            held = f"a reply held across the restart #hold:{hold}"
            payload = {"sessionId": session, "message": held, "stream": True}
            async with http.stream("POST", f"{cluster[0].url}/api/chat", json=payload) as response:
                assert response.status_code == 200, await response.aread()
                turn_id = response.headers["x-turn-id"]
                events = sse_events(response)
                async for event in events:  # acknowledged (its user message stored), streaming
                    if event["type"] == "chunk":
                        break
                await cluster.holds.started(hold)
                restart(private_redis)
                cluster.holds.release(hold)
                async for _ in events:
                    pass  # the owner's own stream ends, whatever became of the reply
            after = "after the held reply"
            turn = await chat(http, cluster, 2, session, after)
            assert (await turn_events(watcher, turn))[-1]["type"] == "reply"
        finally:
            cluster.holds.release(hold)
            await watcher.close()
        for node in cluster.nodes:
            stored = await history(http, node, session)
            shape = [(m["role"], m["status"]) for m in stored]
            assert shape[:3] + shape[4:] == [
                ("user", "complete"),
                ("assistant", "complete"),
                ("user", "complete"),
                ("user", "complete"),
                ("assistant", "complete"),
            ], shape
            assert [m["content"] for m in stored if m["role"] == "user"] == [
                "before the held reply",
                held,
                after,
            ]
            assert (stored[3]["role"], stored[3]["turnId"]) == ("assistant", turn_id), stored[3]
        # the next turn ran on the conversation as stored (a reply without text is left out)
        context = [(m["role"], m["content"]) for m in stored[:5] if m["role"] == "user" or m["content"]]
        assert prompts(cluster, {after})[after] == context
