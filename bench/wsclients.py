"""One process of WebSocket clients for the fan-out benchmark, driven over stdin/stdout.

    python bench/wsclients.py --url ws://127.0.0.1:P/ws?sessionId=S --count 500 [--deflate]

`--deflate` offers permessage-deflate, as every browser does; the server then compresses each
event once per socket.

Each socket is the `websockets` library's Sans-I/O `ClientProtocol` under a bare asyncio
`Protocol`, with no task or queue per socket: the receive time is taken first thing in
`data_received`, before any parsing, which is the earliest moment Python sees the bytes. Text is
only prefix-checked while receiving; JSON is parsed after the round.

Commands, one per line on stdin: `arm` (forget the last round), `collect <timeout s>` (wait until
every socket has seen the turn end, then report per socket `[first chunk time, its turnId, turn end
time]` or null), `quit`. Every answer is one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from common import raise_nofile, run_loop

EVENT_ID = b'{"eventId":'
CONNECTED = b'{"type":"connected"'
CHUNK = b'{"type":"chunk"'
TURN_END = (b'{"type":"reply"', b'{"type":"cancelled"', b'{"type":"error"')


class Fleet:
    """The sockets of this process and how many have seen the current turn end."""

    def __init__(self) -> None:
        self.probes: list[Probe] = []
        self.finished = 0
        self.all_finished = asyncio.Event()

    def on_finished(self) -> None:
        self.finished += 1
        if self.finished >= len(self.probes):
            self.all_finished.set()

    def arm(self) -> None:
        self.finished = 0
        self.all_finished.clear()
        for probe in self.probes:
            probe.first_chunk = None
            probe.turn_ended = None


class Probe(asyncio.Protocol):
    def __init__(self, url: str, fleet: Fleet, *, deflate: bool) -> None:
        loop = asyncio.get_running_loop()
        extensions = enable_client_permessage_deflate(None) if deflate else None
        self.ws = ClientProtocol(parse_uri(url), extensions=extensions)
        self.fleet = fleet
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.first_chunk: tuple[float, bytes] | None = None
        self.turn_ended: float | None = None  # when the turn's last event (`reply`) arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._on_text(now, bytes(event.data))
            elif self.ws.handshake_exc is not None and not self.ready.done():
                self.ready.set_exception(self.ws.handshake_exc)
        self._flush()

    def _on_text(self, now: float, text: bytes) -> None:
        if text.startswith(EVENT_ID):
            # a bus event: its id comes first (web/ws.py), then the event's own fields
            text = b"{" + text[text.index(b",") + 1 :]
        if text.startswith(CHUNK):
            if self.first_chunk is None:
                self.first_chunk = (now, text)
        elif text.startswith(TURN_END):
            if self.turn_ended is None:
                self.turn_ended = now
                self.fleet.on_finished()
        elif text.startswith(CONNECTED) and not self.ready.done():
            # Sent after the server subscribed this socket to the session: from here on it hears all.
            self.ready.set_result(None)

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed during the handshake"))
        if self.turn_ended is None:
            self.turn_ended = 0.0
            self.fleet.on_finished()
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.ws.send_close(1000)
            self._flush()


def emit(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


async def connect_all(fleet: Fleet, url: str, count: int, *, deflate: bool) -> int:
    """Open `count` sockets, a bounded number of handshakes at a time; returns how many failed."""
    loop = asyncio.get_running_loop()
    uri = parse_uri(url)
    gate = asyncio.Semaphore(50)

    async def one() -> None:
        async with gate:
            _, probe = await loop.create_connection(
                lambda: Probe(url, fleet, deflate=deflate), uri.host, uri.port
            )
            fleet.probes.append(probe)
            await asyncio.wait_for(probe.ready, 15)

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    return sum(isinstance(r, BaseException) for r in results)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    raise_nofile()
    fleet = Fleet()
    failed = await connect_all(fleet, args.url, args.count, deflate=args.deflate)
    compressed = sum(bool(p.ws.extensions) for p in fleet.probes)
    emit({"ready": len(fleet.probes) - failed, "failed": failed, "compressed": compressed})

    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    cpu = time.process_time()
    while line := (await commands.readline()).decode().split():
        if line[0] == "arm":
            fleet.arm()
            cpu = time.process_time()
            emit({"armed": True})
        elif line[0] == "collect":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fleet.all_finished.wait(), float(line[1]))
            first: list[list[Any] | None] = []
            for probe in fleet.probes:
                if probe.first_chunk is None:
                    first.append(None)
                else:
                    stamp, text = probe.first_chunk
                    first.append([stamp, json.loads(text)["turnId"], probe.turn_ended or None])
            emit({"first": first, "cpu_ms": (time.process_time() - cpu) * 1000})
        elif line[0] == "quit":
            break
    for probe in fleet.probes:
        probe.close()
    if fleet.probes:
        await asyncio.wait([p.closed for p in fleet.probes], timeout=3)
    for probe in fleet.probes:
        if probe.transport is not None:
            probe.transport.abort()


if __name__ == "__main__":
    run_loop(main())
