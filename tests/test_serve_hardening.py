"""`parley serve` itself, in a subprocess, against hostile clients on raw sockets.

The server is started exactly as a user starts it (`python -m parley.cli serve`), so what is
tested is uvicorn with the options and protocol `parley serve` gives it, not a test set-up.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from parley.standins import openai as openai_standin
from parley.standins.server import BackgroundServer, free_port
from tests.rawhttp import send_until_answered


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    #: stderr lines up to "serving on" (the start-up banner)
    banner: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PARLEY_", "CLOUDFLARE_"))}
    return clean | {
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
        "PARLEY_MODEL_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "PARLEY_LLM": "none",
        "PARLEY_STT": "none",
        "PARLEY_TTS": "none",
        "PARLEY_WARM_UP": "false",
        "PARLEY_LOG_LEVEL": "WARNING",
        "PARLEY_TITLES": "words",  # as make_settings: the stand-ins' echo is no title
        **extra,
    }


@contextmanager
def parley_serve(tmp_path: Path, **extra: str) -> Iterator[Served]:
    """`parley serve` on a free port, ready (its /healthz answers) when the block starts."""
    port = free_port()
    env = _env(tmp_path, {"PARLEY_PORT": str(port), **extra})
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    served = Served(proc, port)
    try:
        # a process boundary: wait for the banner and the first answer, with a deadline
        deadline = time.monotonic() + 60
        while not any("serving on" in line for line in served.banner):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "parley serve exited: " + "\n".join(served.banner)
            served.banner.append(line)
        while True:
            try:
                if httpx.get(served.url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(served.banner)
            time.sleep(0.05)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)  # the pipe ends with the process
        proc.stderr.close()


# -- issue 11, defect 5: the start-up lines never print credentials --------------------------------

PASSWORD = "hunter2-in-the-url"
KEY = f"sk-parley-serve-{secrets.token_hex(8)}"  # per run: nothing secret-shaped committed


def test_the_start_up_lines_do_not_print_credentials(tmp_path: Path) -> None:
    with BackgroundServer(openai_standin.create_app()) as upstream:
        base = f"http://parley:{PASSWORD}@127.0.0.1:{upstream.port}/v1"
        with parley_serve(
            tmp_path, PARLEY_LLM="openai", PARLEY_LLM_BASE_URL=base, PARLEY_LLM_API_KEY=KEY
        ) as s:
            banner = "\n".join(s.banner)
    assert "chat: openai" in banner, banner
    assert f"127.0.0.1:{upstream.port}/v1" in banner  # still says where, without who
    assert PASSWORD not in banner and KEY not in banner and "parley:" + PASSWORD not in banner


# -- issue 11, defect 1: request heads are bounded in size, count and time -------------------------


def error_of(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"connection: close" in head.lower()
    return status, json.loads(body)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with parley_serve(tmp_path_factory.mktemp("default")) as served:
        yield served


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    limits = {
        "PARLEY_MAX_HEADER_BYTES": "4096",
        "PARLEY_MAX_HEADERS": "20",
        "PARLEY_HEADER_TIMEOUT_SECONDS": "0.5",
    }
    with parley_serve(tmp_path_factory.mktemp("strict"), **limits) as served:
        yield served


def test_a_huge_header_is_refused_at_the_limit_not_read_in_full(default_server: Served) -> None:
    total = 64 * 1024 * 1024
    pieces = (b"a" * 65536 for _ in range(total // 65536))
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    answer, sent = send_until_answered(default_server.port, head, pieces)
    status, error = error_of(answer)
    assert (status, error["code"], error["field"], error["limit"]) == (
        431,
        "headers_too_large",
        "headers",
        65536,
    )
    # answered while most of the header was unsent (what went beyond the limit sits in socket
    # buffers): the server stopped reading at the limit
    assert sent < total // 4, sent
    assert httpx.get(default_server.url + "/healthz").status_code == 200


def test_head_limits_count_the_head_only(strict_server: Served) -> None:
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(25))
    status, error = error_of(send_until_answered(strict_server.port, start + many + b"\r\n")[0])
    assert (status, error["field"], error["limit"]) == (431, "headers", 20)
    long = b"X-Long: " + b"a" * 5000 + b"\r\n"
    status, error = error_of(send_until_answered(strict_server.port, start + long + b"\r\n")[0])
    assert (status, error["field"], error["limit"]) == (431, "headers", 4096)
    few = b"".join(b"X-H%d: v\r\n" % i for i in range(19))
    answer, _ = send_until_answered(strict_server.port, start + few + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    # a body that arrives with the head, in the same read, is the body's: not counted as head
    body = json.dumps({"sessionId": "s", "message": "x" * 20000}).encode()
    head = (
        b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    answer, _ = send_until_answered(strict_server.port, head + body)
    head_of, _, reply = answer.partition(b"\r\n\r\n")
    assert head_of.startswith(b"HTTP/1.1 400"), answer[:300]  # the message is too long, not the head
    assert json.loads(reply)["field"] == "message"


def test_connections_that_never_finish_their_headers_are_closed(strict_server: Served) -> None:
    socks = [socket.create_connection(("127.0.0.1", strict_server.port)) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        for sock in socks:
            # a process boundary: wait for the server to give up, with a generous deadline
            sock.settimeout(30)
            answer = b""
            while data := sock.recv(65536):
                answer += data
            status, error = error_of(answer)
            assert (status, error["code"], error["limit"]) == (408, "request_timeout", 0.5)
    finally:
        for sock in socks:
            sock.close()
    # and a client that sends its request is served as ever, over HTTP and WebSocket
    assert httpx.get(strict_server.url + "/healthz").status_code == 200
    with connect(strict_server.url.replace("http://", "ws://") + "/ws?sessionId=s", open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "connected"
