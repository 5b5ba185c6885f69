"""A client that hangs up halfway through its body is no server error, and changes nothing."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from parley.providers.testing import EchoChat
from tests.conftest import ServerFactory

#: a multipart body that stops in the middle of its audio part
PART = b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\nRIFF'


@pytest.mark.parametrize("path", ["/api/chat", "/api/transcribe"])
async def test_a_body_cut_off_by_the_client_is_not_logged_as_an_error(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    server = serve(chat=EchoChat())
    host, port = server.url.removeprefix("http://").split(":")
    content_type = "application/json" if path == "/api/chat" else "multipart/form-data; boundary=b"
    with caplog.at_level(logging.DEBUG, logger="parley"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
            + (b'{"sessionId": "gone", "message": "' if path == "/api/chat" else PART)
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        # The server noticed (its debug line) before we look at what it logged.
        async with httpx.AsyncClient(base_url=server.url) as client:
            deadline = asyncio.get_running_loop().time() + 10
            while "client went away" not in caplog.text:
                assert asyncio.get_running_loop().time() < deadline, caplog.text
                await asyncio.sleep(0.02)
            history = (await client.get("/api/history", params={"sessionId": "gone"})).json()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert history["messages"] == []
    del reader
