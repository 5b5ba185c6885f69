"""`parley chat`: a terminal chat with a running Parley server, streamed as the reply is written.

It is a plain client of the public API (POST /api/chat with stream=true, read the SSE events,
POST /api/stop; GET /api/history and the session's WebSocket with `--session`), so it exercises
exactly what any other client sees. Ctrl-C during a reply stops that turn on the server (the
partial reply stays in the history as cancelled); Ctrl-C at the prompt, or end of input, quits.

`--session ID` continues a conversation: its history is printed first, and turns that other
clients (a browser, a phone, a voice call) run in it meanwhile are printed as they happen. With
PARLEY_AUTH=token, `--token` (or PARLEY_TOKEN) is sent as `Authorization: Bearer`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
from typing import Any, TextIO

import httpx
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from parley.providers.sse import SSEDecoder

#: events after which the server sends nothing more for this turn
_FINAL = frozenset({"reply", "cancelled", "error"})


class ChatClient:
    """One session on one server; `send` streams a reply to `out` and returns how it ended."""

    def __init__(
        self, url: str, session_id: str, out: TextIO, err: TextIO, *, token: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.session_id = session_id
        self.out = out
        self.err = err
        #: sent with each turn; the live follower skips the turns that carry it
        self.client_id = f"cli-{secrets.token_hex(6)}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        # No read timeout: a reply may pause as long as the model thinks.
        self.http = httpx.Client(
            base_url=self.url, headers=self.headers, timeout=httpx.Timeout(10.0, read=None)
        )
        #: one writer at a time: this client's replies and the follower's turns of others
        self.lock = threading.Lock()
        self._follower: threading.Thread | None = None
        self._socket: ClientConnection | None = None

    def print_history(self) -> int:
        """Print the session's stored conversation; how many messages it has."""
        response = self.http.get("/api/history", params={"sessionId": self.session_id})
        if response.is_error:
            self._error(_error_text(response))
            return 0
        messages = response.json().get("messages", [])
        for message in messages:
            prefix = "> " if message.get("role") == "user" else ""
            self.out.write(f"{prefix}{message.get('content', '')}\n")
        self.out.flush()
        return len(messages)

    def follow(self) -> None:
        """Print the turns other clients run in this session, as they happen (a daemon thread)."""
        ws_url = "ws" + self.url.removeprefix("http") + f"/ws?sessionId={self.session_id}"
        self._socket = connect(ws_url, additional_headers=self.headers, open_timeout=10)
        self._follower = threading.Thread(target=self._follow, args=(self._socket,), daemon=True)
        self._follower.start()

    def _follow(self, socket: ClientConnection) -> None:
        others: set[str] = set()  # turns of other clients, by turn id
        try:
            for frame in socket:
                event = json.loads(frame)
                kind, turn = event.get("type"), event.get("turnId")
                if kind == "user_message" and event.get("clientId") != self.client_id:
                    others.add(str(turn))
                    content = (event.get("message") or {}).get("content", "")
                    with self.lock:
                        self.out.write(f"> {content}\n")
                        self.out.flush()
                elif turn in others and kind == "chunk":
                    with self.lock:
                        self.out.write(str(event.get("text", "")))
                        self.out.flush()
                elif turn in others and kind in _FINAL:
                    others.discard(turn)
                    with self.lock:
                        self.out.write("\n")
                        self.out.flush()
                elif kind == "deleted":
                    self._error("this conversation was deleted")
                    return
        except (WebSocketException, OSError):
            return  # closed: by close(), or the server went away (the next send says so)

    def send(self, text: str) -> str:
        """Stream one turn; "reply", "cancelled", "error" or "stopped" (Ctrl-C here)."""
        with self.lock:
            return self._send(text)

    def _send(self, text: str) -> str:
        body = {"message": text, "sessionId": self.session_id, "stream": True, "clientId": self.client_id}
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
        if self._socket is not None:
            self._socket.close()
        if self._follower is not None:
            self._follower.join(timeout=5)
        self.http.close()


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    return str(body.get("error")) if isinstance(body, dict) else f"HTTP {response.status_code}"


def chat(args: argparse.Namespace) -> int:
    session_id = args.session or f"cli-{secrets.token_hex(4)}"
    client = ChatClient(args.url, session_id, sys.stdout, sys.stderr, token=args.token)
    interactive = sys.stdin.isatty()
    print(
        f"parley chat: session {session_id} at {client.url} (Ctrl-C stops a reply, Ctrl-D quits)",
        file=sys.stderr,
    )
    try:
        if args.session:
            client.print_history()
            try:
                client.follow()
            except (WebSocketException, OSError, TimeoutError) as exc:
                print(f"parley chat: not following the session live ({exc})", file=sys.stderr)
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
    cmd.add_argument(
        "--session",
        default=None,
        help="session id to continue (its history is printed, other clients' turns followed live); "
        "unset starts a new one",
    )
    cmd.add_argument(
        "--token",
        default=os.environ.get("PARLEY_TOKEN") or None,
        help="API token for PARLEY_AUTH=token (default: $PARLEY_TOKEN)",
    )
    cmd.set_defaults(func=chat)
