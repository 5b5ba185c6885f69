"""A WebSocket relay on loopback between the bridge and its upstream XiaoZhi server, recording both ways.

The upstream Parley's PARLEY_PUBLIC_URL points here, so its OTA answer sends the bridge to this
relay, which opens the real socket to the upstream with the same headers and passes every frame
on unchanged. Tests read what went up and down, and `drop()` closes the bridge's side as a server
that goes away mid-call would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection

FORWARDED = ("Authorization", "Protocol-Version", "Device-Id", "Client-Id")


class Tap:
    def __init__(self) -> None:
        #: the upstream's WebSocket URL (set once it runs)
        self.target = ""
        self.up: list[str | bytes] = []
        self.down: list[str | bytes] = []
        self.connections = 0
        #: the Device-Id of each socket, in the order they opened
        self.devices: list[str] = []
        #: open sockets of the bridge, with their Device-Id
        self._open: dict[ServerConnection, str] = {}
        self._server: Server | None = None
        self.aborted = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> Tap:
        self._server = await websockets.serve(self._relay, "127.0.0.1", 0, max_size=1 << 20)
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def up_json(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.up if isinstance(m, str)]

    def up_audio(self) -> list[bytes]:
        return [m for m in self.up if isinstance(m, bytes)]

    async def drop(
        self, code: int = 1011, reason: str = "upstream restarting", *, device: str | None = None
    ) -> None:
        """Close every socket of the bridge (or `device`'s), as the upstream going away would."""
        for ws, device_id in list(self._open.items()):
            if device in (None, device_id):
                await ws.close(code, reason)

    async def _relay(self, ws: ServerConnection) -> None:
        self.connections += 1
        assert ws.request is not None
        self._open[ws] = ws.request.headers.get("Device-Id", "")
        self.devices.append(self._open[ws])
        headers = {name: ws.request.headers[name] for name in FORWARDED if name in ws.request.headers}
        try:
            async with websockets.connect(
                self.target, additional_headers=headers, max_size=1 << 20
            ) as upstream:
                tasks = [
                    asyncio.create_task(self._pump(ws, upstream, self.up)),
                    asyncio.create_task(self._pump(upstream, ws, self.down)),
                ]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._open.pop(ws, None)

    async def _pump(self, source: Any, sink: Any, record: list[str | bytes]) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in source:
                record.append(message)
                if isinstance(message, str) and '"abort"' in message:
                    self.aborted.set()
                await sink.send(message)
