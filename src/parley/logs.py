"""Logging: one line per request and per turn, key=value, never a secret or a message body at INFO."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access = logging.getLogger("parley.access")


def setup(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )
    # uvicorn's own access log would duplicate ours, and prints query strings.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


class AccessLog:
    """Pure ASGI middleware (no buffering, so SSE streams pass straight through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []
        first_byte: list[float] = []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                first_byte.append(time.perf_counter())
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            fields: dict[str, Any] = {
                "method": scope["method"],
                # the path only: query strings may carry session ids or search terms
                "path": scope["path"],
                "status": status[0] if status else 500,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
            session_id = scope.get("state", {}).get("session_id")
            if session_id:
                fields["session"] = session_id
            if first_byte:
                fields["ttfb_ms"] = round((first_byte[0] - started) * 1000, 1)
            access.info("request %s", " ".join(f"{k}={v}" for k, v in fields.items()))
