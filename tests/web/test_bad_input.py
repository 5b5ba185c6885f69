"""Bad input gets a clear 4xx in one error shape, names the field and limit, and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from parley.providers.testing import EchoChat
from tests.conftest import ServerFactory, make_settings

SID = "session-bad"

ERROR_KEYS = {"error", "code", "status"}


def assert_error(r: httpx.Response, status: int, field: str | None = None, limit: Any = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body.keys() >= ERROR_KEYS
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert body["field"] == field
    if limit is not None:
        assert body["limit"] == limit


CHAT_CASES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("missing message", {"json": {"sessionId": SID}}, 400, "message"),
    ("missing session", {"json": {"message": "hi"}}, 400, "sessionId"),
    ("empty message", {"json": {"message": "   ", "sessionId": SID}}, 400, "message"),
    ("message not a string", {"json": {"message": 5, "sessionId": SID}}, 400, "message"),
    ("stream not a bool", {"json": {"message": "x", "sessionId": SID, "stream": "yes"}}, 400, "stream"),
    ("invalid json", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "body"),
    ("json array", {"json": ["hi"]}, 400, "body"),
    (
        "wrong content type",
        {"content": b"message=hi", "headers": {"content-type": "text/plain"}},
        415,
        "Content-Type",
    ),
    ("bad session chars", {"json": {"message": "hi", "sessionId": "../etc/passwd"}}, 400, "sessionId"),
    ("long session", {"json": {"message": "hi", "sessionId": "a" * 129}}, 400, "sessionId"),
]


@pytest.mark.parametrize(("case", "kwargs", "status", "field"), CHAT_CASES, ids=[c[0] for c in CHAT_CASES])
async def test_bad_chat_requests(
    serve: ServerFactory, case: str, kwargs: dict[str, Any], status: int, field: str | None
) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/chat", **kwargs)
        assert_error(r, status, field)
        if case in ("missing message", "missing session"):
            assert r.json()["error"] == "Missing message or sessionId"  # the seed's words
        # nothing changed, and the server still serves
        assert (await client.get("/api/history", params={"sessionId": SID})).json()["messages"] == []
        ok = await client.post("/api/chat", json={"message": "still here", "sessionId": SID})
        assert ok.status_code == 200


async def test_oversized_message_names_the_configured_limit(serve: ServerFactory, tmp_path: Any) -> None:
    server = serve(chat=EchoChat(), settings=make_settings(tmp_path / "d", max_message_chars=100))
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/chat", json={"message": "x" * 101, "sessionId": SID})
        assert_error(r, 400, "message", 100)
        assert "100" in r.json()["error"]
        huge = await client.post(
            "/api/chat",
            content=b'{"message":"' + b"x" * 1_000_000 + b'"}',
            headers={"content-type": "application/json"},
        )
        assert_error(huge, 413, "body")
        exact = await client.post("/api/chat", json={"message": "x" * 100, "sessionId": SID})
        assert exact.status_code == 200
        assert len((await client.get("/api/history", params={"sessionId": SID})).json()["messages"]) == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "sessionId"),
        ({"sessionId": ""}, "sessionId"),
        ({"sessionId": "a b"}, "sessionId"),
        ({"sessionId": SID, "limit": "0"}, "limit"),
        ({"sessionId": SID, "limit": "many"}, "limit"),
    ],
)
async def test_bad_history_requests(serve: ServerFactory, params: dict[str, str], field: str) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert_error(await client.get("/api/history", params=params), 400, field)


async def test_bad_clear_and_stop_requests(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        await client.post("/api/chat", json={"message": "keep me", "sessionId": SID})
        assert_error(await client.post("/api/clear", json={}), 400, "sessionId")
        assert_error(
            await client.post("/api/clear", content=b"x", headers={"content-type": "text/plain"}), 415
        )
        assert_error(await client.post("/api/stop", json={"sessionId": SID, "turnId": 7}), 400, "turnId")
        assert len((await client.get("/api/history", params={"sessionId": SID})).json()["messages"]) == 2


async def test_unknown_route_and_method_use_the_same_shape(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert_error(await client.get("/api/nope"), 404)
        assert_error(await client.get("/api/chat"), 405)


WAV_HEADER = b"RIFF\x24\x00\x00\x00WAVEfmt "


@pytest.mark.parametrize(
    ("files", "data", "status", "field"),
    [
        (None, {"sessionId": SID}, 400, "audio"),
        ({"audio": ("a.webm", b"\x1a\x45\xdf\xa3" + b"\0" * 64, "audio/webm")}, {}, 400, "sessionId"),
        ({"audio": ("a.webm", b"", "audio/webm")}, {"sessionId": SID}, 400, "audio"),
        (
            {"audio": ("notes.txt", b"just some text, not audio", "audio/webm")},
            {"sessionId": SID},
            415,
            "audio",
        ),
        (
            {"audio": ("a.wav", WAV_HEADER + b"\0" * 64, "audio/wav")},
            {"sessionId": "bad id!"},
            400,
            "sessionId",
        ),
    ],
    ids=["no audio", "no session", "empty", "not audio", "bad session"],
)
async def test_bad_transcribe_requests(
    serve: ServerFactory, files: Any, data: dict[str, str], status: int, field: str
) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = (
            await client.post("/api/transcribe", files=files, data=data)
            if files
            else await client.post("/api/transcribe", data=data, files={"other": ("x", b"x")})
        )
        assert_error(r, status, field)
        if field == "audio" and status == 400 and files is None:
            assert r.json()["error"] == "Missing audio or sessionId"


async def test_transcribe_rejects_audio_over_the_limit_and_non_multipart(
    serve: ServerFactory, tmp_path: Any
) -> None:
    server = serve(chat=EchoChat(), settings=make_settings(tmp_path / "d", max_audio_bytes=2048))
    async with httpx.AsyncClient(base_url=server.url) as client:
        big = WAV_HEADER + b"\0" * 4096
        r = await client.post(
            "/api/transcribe", files={"audio": ("a.wav", big, "audio/wav")}, data={"sessionId": SID}
        )
        assert_error(r, 413, "audio", 2048)
        r = await client.post("/api/transcribe", json={"audio": "x", "sessionId": SID})
        assert_error(r, 400, "Content-Type")
