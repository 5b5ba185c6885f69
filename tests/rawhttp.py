"""HTTP/1.1 by hand over a real socket, for tests of what a server does with hostile bytes."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterable


def answer_complete(answer: bytes) -> bool:
    """A whole response is in: its head, and as much body as its Content-Length says."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def send_until_answered(port: int, first: bytes, more: Iterable[bytes] = ()) -> tuple[bytes, int]:
    """Send `first`, then the pieces of `more` while reading; stop at a complete answer or when
    the server closes. Returns the answer and how many bytes of `more` were taken to be sent
    (a server that stops reading early makes this far smaller than all of `more`)."""
    rest = iter(more)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(first)
    sock.setblocking(False)
    answer, sent, pending = b"", 0, b""
    try:
        while not answer_complete(answer):
            if not pending:
                pending = next(rest, b"")
                sent += len(pending)
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], 30)
            assert readable or writable, "the server neither read nor answered for 30 s"
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
            elif writable:
                try:
                    pending = pending[sock.send(pending) :]
                except (BrokenPipeError, ConnectionResetError):
                    pending, rest = b"", iter(())  # the server hung up: read what it said
    finally:
        sock.close()
    return answer, sent
