"""`parley chat`: a terminal chat with a running Parley server, streamed as the reply is written.

It is a plain HTTP client of the public API (POST /api/chat with stream=true, read the SSE
events, POST /api/stop), so it exercises exactly what any other client sees. Ctrl-C during a
reply stops that turn on the server (the partial reply stays in the history as cancelled);
Ctrl-C at the prompt, or end of input, quits.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any, TextIO

import httpx

from parley.providers.sse import SSEDecoder

#: events after which the server sends nothing more for this turn
_FINAL = frozenset({"reply", "cancelled", "error"})


class ChatClient:
    """One session on one server; `send` streams a reply to `out` and returns how it ended."""

    def __init__(self, url: str, session_id: str, out: TextIO, err: TextIO) -> None:
        self.url = url.rstrip("/")
        self.session_id = session_id
        self.out = out
        self.err = err
        # No read timeout: a reply may pause as long as the model thinks.
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(10.0, read=None))

    def send(self, text: str) -> str:
        """Stream one turn; "reply", "cancelled", "error" or "stopped" (Ctrl-C here)."""
        body = {"message": text, "sessionId": self.session_id, "stream": True}
        turn_id: str | None = None
        try:
            with self.http.stream("POST", "/api/chat", json=body) as response:
                if response.is_error:
                    response.read()
                    self._error(_error_text(response))
                    return "error"
                turn_id = response.headers.get("x-turn-id")
                return self._read(response)
        except KeyboardInterrupt:
            self.stop(turn_id)
            self.out.write("\n")
            self.err.write("[stopped]\n")
            return "stopped"

    def _read(self, response: httpx.Response) -> str:
        decoder = SSEDecoder()
        for text in response.iter_text():
            for data in decoder.feed(text):
                ended = self._event(json.loads(data))
                if ended is not None:
                    return ended
        self._error("the server ended the reply early")
        return "error"

    def _event(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        if kind == "chunk":
            self.out.write(str(event.get("text", "")))
            self.out.flush()
        elif kind in _FINAL:
            self.out.write("\n")
            self.out.flush()
            if kind == "error":
                error = event.get("error")
                self._error(str(error.get("error")) if isinstance(error, dict) else str(error))
            elif kind == "cancelled":
                self.err.write("[cancelled]\n")
            return str(kind)
        return None

    def stop(self, turn_id: str | None) -> None:
        try:
            self.http.post("/api/stop", json={"sessionId": self.session_id, "turnId": turn_id}, timeout=5.0)
        except httpx.HTTPError as exc:
            self._error(f"could not stop the reply: {exc}")

    def _error(self, message: str) -> None:
        self.err.write(f"[error: {message}]\n")
        self.err.flush()

    def close(self) -> None:
        self.http.close()


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    return str(body.get("error")) if isinstance(body, dict) else f"HTTP {response.status_code}"


def chat(args: argparse.Namespace) -> int:
    session_id = args.session or f"cli-{secrets.token_hex(4)}"
    client = ChatClient(args.url, session_id, sys.stdout, sys.stderr)
    interactive = sys.stdin.isatty()
    print(
        f"parley chat: session {session_id} at {client.url} (Ctrl-C stops a reply, Ctrl-D quits)",
        file=sys.stderr,
    )
    try:
        while True:
            if interactive:
                print("you> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                return 0
            if line.strip():
                client.send(line.strip())
    except httpx.ConnectError as exc:
        print(f"parley chat: cannot reach {client.url} ({exc}); is `parley serve` running?", file=sys.stderr)
        return 1
    finally:
        client.close()


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("chat", help="chat in the terminal with a running server")
    cmd.add_argument("--url", default="http://127.0.0.1:8787", help="the server (default %(default)s)")
    cmd.add_argument("--session", default=None, help="session id to continue; unset starts a new one")
    cmd.set_defaults(func=chat)
