"""deploy/nginx.conf in front of three real nodes, with the real nginx, without Docker.

The committed file is the compose example's (upstream parley-1..3:8787, listen 80); the test
rewrites only those lines to the harness's nodes and a free port on 127.0.0.1, and puts nginx's
temporary files in a directory of its own. Then, through nginx only: a streamed turn arrives as SSE
chunks while its reply is still being written, a WebSocket on /ws gets that turn's events, and
turns on new sessions land on every node (each node takes the sessions it is sent first; Redis
names the holder).
"""

from __future__ import annotations

import importlib
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from websockets.asyncio.client import connect

from parley.config import settings_table
from parley.standins.server import free_port
from tests.cluster.conftest import START_DEADLINE, Cluster, history, session_id, sse_events, turn_events
from tests.conftest import require_tool

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
UPSTREAM_SERVER = re.compile(r"^(\s*)server parley-\d+:8787;\n", re.MULTILINE)
LISTEN = re.compile(r"^(\s*)listen 80;$", re.MULTILINE)


@dataclass
class Balancer:
    port: int
    proc: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, session: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?sessionId={session}"


def render(conf: str, ports: list[int], listen: int, tmp: Path) -> str:
    """deploy/nginx.conf for these node ports and this listen port, its temp files under `tmp`."""
    servers = UPSTREAM_SERVER.findall(conf)
    assert len(servers) == 3, "deploy/nginx.conf no longer lists parley-1..3:8787"
    indent = servers[0]
    nodes = "".join(f"{indent}server 127.0.0.1:{port};\n" for port in ports)
    conf = UPSTREAM_SERVER.sub("", conf, count=2)
    conf = UPSTREAM_SERVER.sub(nodes, conf, count=1)
    conf, listened = LISTEN.subn(rf"\g<1>listen 127.0.0.1:{listen};", conf)
    assert listened == 1, "deploy/nginx.conf no longer has one `listen 80;`"
    temp = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return conf.replace("http {\n", f"http {{\n{temp}\n", 1)


@pytest.fixture(scope="module")
def balancer(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balancer]:
    nginx = require_tool("nginx", "the load balancer in front of the nodes")
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(render(CONF.read_text(), [node.port for node in cluster.nodes], port, tmp))
    proc = subprocess.Popen(
        [
            nginx,
            "-p",
            str(tmp),
            "-c",
            str(conf),
            "-g",
            f"daemon off; pid {tmp / 'nginx.pid'}; error_log stderr;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # a process boundary: nginx says nothing when it is up, so wait for its port to accept
        deadline = time.monotonic() + START_DEADLINE
        while True:
            assert proc.poll() is None, f"nginx exited with {proc.returncode}: {proc.communicate()[1]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen in time"
                time.sleep(0.05)
        yield Balancer(port, proc)
    finally:
        proc.terminate()  # SIGTERM: nginx's fast shutdown
        _out, errors = proc.communicate(timeout=30)
        assert "[emerg]" not in errors and "[alert]" not in errors, errors


def lease_holders(redis_url: str, sessions: set[str]) -> dict[str, str]:
    """The node id holding each of `sessions`' leases (the instance name without its suffix)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = [str(key) for key in client.scan_iter("parley:lease:*")]
        values = client.mget(keys) if keys else []
    finally:
        client.close()
    held = {}
    for key, value in zip(keys, values, strict=True):
        session = key.rpartition("/")[2]
        if session in sessions and value is not None:
            held[session] = str(value).rsplit("-", 1)[0]
    return held


async def test_a_streamed_turn_through_nginx_comes_in_chunks_to_the_sender_and_to_a_socket(
    cluster: Cluster, balancer: Balancer
) -> None:
    session = session_id("nginx")
    hold = "hold-" + session
    message = f"stream this through the balancer #hold:{hold}"
    reply = "You said: " + message
    ws = await connect(balancer.ws_url(session), max_size=None)
    try:
        assert json.loads(await ws.recv())["type"] == "connected"
        async with httpx.AsyncClient(timeout=None) as http:
            payload = {"sessionId": session, "message": message, "stream": True}
            try:
                async with http.stream("POST", f"{balancer.url}/api/chat", json=payload) as response:
                    assert response.status_code == 200, await response.aread()
                    assert response.headers["content-type"].startswith("text/event-stream")
                    turn_id = response.headers["x-turn-id"]
                    events = sse_events(response)
                    before_release = []
                    async for event in events:
                        before_release.append(event)
                        if event["type"] == "chunk":
                            break
                    # the reply is still held upstream: this chunk was not kept back by nginx
                    assert cluster.holds.has_started(hold)
                    cluster.holds.release(hold)
                    streamed = before_release + [event async for event in events]
            finally:
                cluster.holds.release(hold)
            seen = await turn_events(ws, turn_id)
            stored = await history(http, cluster[0], session)
    finally:
        await ws.close()

    mine = [event for event in streamed if event.get("turnId") == turn_id]
    assert [e["type"] for e in mine][-1] == "reply", mine
    chunks = [e["text"] for e in mine if e["type"] == "chunk"]
    assert len(chunks) > 1 and "".join(chunks) == reply
    assert mine[-1]["response"] == reply
    # the socket through nginx got the same turn, chunk by chunk
    assert [e["type"] for e in seen][-1] == "reply", seen
    assert "".join(e["text"] for e in seen if e["type"] == "chunk") == reply
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", message, "complete"),
        ("assistant", reply, "complete"),
    ]


async def test_turns_through_nginx_spread_over_the_nodes(cluster: Cluster, balancer: Balancer) -> None:
    sessions = [session_id(f"spread-{index}") for index in range(len(cluster.nodes))]
    async with httpx.AsyncClient(timeout=None) as http:
        # one after another: round robin sends each to the next node, which takes the new session
        for session in sessions:
            answer = await http.post(
                f"{balancer.url}/api/chat", json={"sessionId": session, "message": f"hi {session}"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["response"] == f"You said: hi {session}"
    held = lease_holders(cluster.redis_url, set(sessions))
    assert set(held) == set(sessions), held
    assert set(held.values()) == {node.name for node in cluster.nodes}, held


def test_the_compose_example_names_real_settings_and_the_nodes_nginx_balances() -> None:
    # PyYAML comes with the dev tools (gguf, schemathesis); it has no type stubs here
    yaml: Any = importlib.import_module("yaml")
    compose = yaml.safe_load((CONF.parent / "compose.yaml").read_text())
    services = compose["services"]
    known = {env for env, _default, _help in settings_table()}
    nodes = {name: service for name, service in services.items() if name.startswith("parley-")}
    for name, service in nodes.items():
        named = {env for env in service["environment"] if env.startswith("PARLEY_")}
        assert named <= known, f"{name}: not settings: {named - known}"
        assert service["environment"]["PARLEY_REDIS_URL"].startswith("redis://")
        assert service["environment"]["PARLEY_DATABASE_URL"].startswith("postgresql://")
    assert len({service["environment"]["PARLEY_NODE_ID"] for service in nodes.values()}) == len(nodes) == 3
    # nginx's upstream lists exactly these services, and compose mounts this very file
    upstream = set(re.findall(r"^\s*server (parley-\d+):8787;$", CONF.read_text(), re.MULTILINE))
    assert upstream == set(nodes)
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
