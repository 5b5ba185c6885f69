"""Provider tests talk HTTP to real servers on 127.0.0.1: the stand-ins, or a scripted upstream."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from starlette.types import Receive, Scope, Send

from parley.standins.server import BackgroundServer


@dataclass
class ScriptedUpstream:
    """A raw ASGI app that answers every request with bytes written piece by piece.

    Each piece is a separate `send` followed by a short pause, so the client reads them as
    separate network chunks: that is how events split at awkward places reach a provider.
    """

    url: str = ""
    status: int = 200
    content_type: bytes = b"text/event-stream"
    pieces: list[bytes] = field(default_factory=list)
    pause: float = 0.003
    bodies: list[bytes] = field(default_factory=list)
    #: each request's headers, names lower-cased
    heads: list[dict[str, str]] = field(default_factory=list)

    def script(
        self, pieces: list[bytes], *, status: int = 200, content_type: bytes = b"text/event-stream"
    ) -> None:
        self.pieces, self.status, self.content_type = pieces, status, content_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        self.heads.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        headers = [(b"content-type", self.content_type)]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        for piece in self.pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(self.pause)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def cut(data: bytes, *points: int) -> list[bytes]:
    """Split `data` at the given offsets, and everything else into 3-byte pieces."""
    bounds = sorted({*points, *range(0, len(data), 3), len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds) if data[a:b]]


@pytest.fixture(scope="module")
def _scripted_server() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    with BackgroundServer(upstream) as server:
        upstream.url = server.url
        yield upstream


@pytest.fixture
def scripted(_scripted_server: ScriptedUpstream) -> ScriptedUpstream:
    _scripted_server.script([])
    _scripted_server.bodies.clear()
    _scripted_server.heads.clear()
    return _scripted_server


async def wait_until(condition: Callable[[], bool], within: float = 3.0) -> bool:
    """Poll a condition that a server thread makes true (stand-in state is written there)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
