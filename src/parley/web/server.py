"""How `parley serve` runs uvicorn: its options, and a guard on the head of every request.

uvicorn's httptools protocol (the one `uvicorn[standard]` picks) puts no limit on the size or
number of request headers and no time limit on sending them. One client sending a 64 MiB header
kept the event loop busy for seconds (the parser joins the growing value again on every read,
so every other client waited), and connections that never finish their headers were held for
good (slowloris). `HeadGuard` is that protocol with three limits on the head (request line and
headers): PARLEY_MAX_HEADER_BYTES, PARLEY_MAX_HEADERS and PARLEY_HEADER_TIMEOUT_SECONDS. A client
over one gets 431 or 408 in Parley's error shape and its connection is closed; bodies, WebSockets
and everything else are uvicorn's own.
"""

from __future__ import annotations

import asyncio
import http
import json
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from parley.config import Settings
from parley.errors import HeadersTimeout, HeadersTooLarge, InvalidInput
from parley.web.ws import frame_limit


class _TooManyHeaders(Exception):
    """Raised inside the parser's header callback to stop parsing (httptools re-raises it)."""


class HeadGuard(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size, count and time limit on request heads."""

    max_head_bytes: ClassVar[int] = 65536
    max_headers: ClassVar[int] = 100
    head_timeout: ClassVar[float] = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._header_count = 0
        # True from the connection's start, and from each new request's first byte, until
        # its headers are complete
        self._in_head = True
        self._refusal: InvalidInput | None = None
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.head_timeout, self._head_too_slow
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # While in a head, the parser gets no more than the bytes the head may still use, so it
        # never buffers past the limit, and a body arriving in the same read is not counted.
        while self._in_head and data:
            room = self.max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse(
                    HeadersTooLarge(
                        f"request headers are larger than {self.max_head_bytes} bytes",
                        field="headers",
                        limit=self.max_head_bytes,
                    )
                )
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # refused, or upgraded to a WebSocket
        # Past the head the rest goes in whole. A keep-alive connection's next head may start
        # inside it, uncounted: that is at most one read (256 KiB), not an unbounded header.
        if data:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_count = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._refusal = HeadersTooLarge(
                f"more than {self.max_headers} request headers", field="headers", limit=self.max_headers
            )
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to any parser error, including the one on_header raised on purpose
        if self._refusal is not None:
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(
                HeadersTimeout(
                    f"request headers were not received within {self.head_timeout:g} s",
                    field="headers",
                    limit=self.head_timeout,
                )
            )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, exc: InvalidInput) -> None:
        """Answer `exc` in Parley's error shape and close: the rest of this head is never read."""
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        body = json.dumps(exc.to_dict(), separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {exc.status} {http.HTTPStatus(exc.status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()


def head_guard(settings: Settings) -> type[HeadGuard]:
    """The guarded protocol with the limits of `settings`."""

    class Configured(HeadGuard):
        max_head_bytes = settings.max_header_bytes
        max_headers = settings.max_headers
        head_timeout = settings.header_timeout_seconds

    return Configured


def server_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config`, as `parley serve` uses them."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "http": head_guard(settings),
        # the app checks frames against the frame limit with a clear error; this is only the
        # hard ceiling that protects memory
        "ws_max_size": max(frame_limit(settings) * 4, 1 << 20),
        # events are small JSON; compressing each one once per socket cost 40% more CPU per
        # fan-out and 40-70 KB per socket in bench/ (1,000 sockets)
        "ws_per_message_deflate": False,
        # AccessLog writes one line per request, without query strings
        "access_log": False,
        "proxy_headers": True,
    }
