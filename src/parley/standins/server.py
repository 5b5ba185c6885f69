"""Run an ASGI app on a real uvicorn server in a background thread (tests, benchmarks, stand-ins)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


class BackgroundServer:
    """A uvicorn server on 127.0.0.1 in its own thread and event loop.

    Use as a context manager; `url` is `http://127.0.0.1:<port>`. `port=0` picks a free port.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        if port == 0:
            port = free_port(host)
        self.app = app
        self.host = host
        self.port = port
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "on")
        config.setdefault("ws_max_size", 16 * 1024 * 1024)
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def start(self, timeout: float = 15.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} failed to start") from self._error
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {self.port} did not start in {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
