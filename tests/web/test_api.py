"""The REST API against a real server: the seed's shapes, streaming, stop, and every bad input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from parley.providers.testing import EchoChat
from parley.providers.unconfigured import UnconfiguredChat
from tests.conftest import ServerFactory, make_settings, sse_events

SID = "session-abc123"


async def history(client: httpx.AsyncClient, sid: str = SID) -> list[dict[str, object]]:
    r = await client.get("/api/history", params={"sessionId": sid})
    assert r.status_code == 200
    messages: list[dict[str, object]] = r.json()["messages"]
    return messages


async def test_chat_replies_in_the_seed_shape_and_stores_both_messages(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/chat", json={"message": "hello there", "sessionId": SID})
        assert r.status_code == 200
        body = r.json()
        assert body["response"] == "You said: hello there"
        assert body["sessionId"] == SID
        assert body["status"] == "complete"
        assert body["usage"]["completion_tokens"] == 4
        messages = await history(client)
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "hello there", "complete"),
        ("assistant", "You said: hello there", "complete"),
    ]
    assert all({"id", "created_at", "turnId"} <= m.keys() for m in messages)


@pytest.mark.parametrize("how", ["body", "accept"])
async def test_chat_streams_sse_chunks_then_the_whole_reply(serve: ServerFactory, how: str) -> None:
    server = serve(chat=EchoChat(token_interval=0.01))
    payload: dict[str, object] = {"message": "one two three", "sessionId": SID}
    headers = {}
    if how == "body":
        payload["stream"] = True
    else:
        headers["Accept"] = "text/event-stream"
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/chat", json=payload, headers=headers)
    assert r.headers["content-type"].startswith("text/event-stream")
    evs = sse_events(r.text)
    names = [name for name, _ in evs]
    assert names[:2] == ["user_message", "turn_started"]
    assert names[-1] == "reply"
    chunks = [data["text"] for name, data in evs if name == "chunk"]
    assert len(chunks) == 5
    final = evs[-1][1]
    assert "".join(chunks) == final["response"] == "You said: one two three"
    assert final["usage"]["completion_tokens"] == 5
    assert all(data["type"] == name for name, data in evs)


async def test_a_model_failure_is_an_error_event_and_a_failed_turn(serve: ServerFactory) -> None:
    server = serve(chat=UnconfiguredChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/chat", json={"message": "hi", "sessionId": SID})
        assert r.status_code == 503
        assert r.json()["code"] == "not_configured"
        assert "CLOUDFLARE_API_TOKEN" in r.json()["error"]
        r = await client.post("/api/chat", json={"message": "again", "sessionId": SID, "stream": True})
        evs = sse_events(r.text)
        assert evs[-1][0] == "error"
        assert evs[-1][1]["error"]["code"] == "not_configured"
        messages = await history(client)
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "failed"),
        ("user", "complete"),
        ("assistant", "failed"),
    ]


async def test_stop_over_http_cancels_the_running_turn(serve: ServerFactory) -> None:
    chat = EchoChat(token_interval=0.2)
    server = serve(chat=chat)
    long = " ".join(f"w{i}" for i in range(50))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sending = asyncio.create_task(client.post("/api/chat", json={"message": long, "sessionId": SID}))
        for _ in range(200):
            stopped = await client.post("/api/stop", json={"sessionId": SID})
            if stopped.json()["stopped"]:
                break
            await asyncio.sleep(0.02)
        assert stopped.status_code == 200
        assert stopped.json()["stopped"] is True
        r = await sending
        assert r.status_code == 200
        assert r.json()["status"] == "cancelled"
        assert len(r.json()["response"]) < len("You said: " + long)
        messages = await history(client)
        assert messages[-1]["status"] == "cancelled"
        assert messages[-1]["content"] == r.json()["response"]
        # nothing running now: a second stop stops nothing
        again = await client.post("/api/stop", json={"sessionId": SID})
        assert again.json() == {"stopped": False, "turnId": None}
        unknown = await client.post("/api/stop", json={"sessionId": SID, "turnId": "turn_nope"})
        assert unknown.status_code == 404
        assert unknown.json()["field"] == "turnId"


async def test_clear_empties_history_and_keeps_other_sessions(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        for sid in (SID, "other"):
            await client.post("/api/chat", json={"message": "x", "sessionId": sid})
        r = await client.post("/api/clear", json={"sessionId": SID})
        assert r.status_code == 200
        assert r.json() == {"success": True, "removed": 2}
        assert await history(client) == []
        assert len(await history(client, "other")) == 2


async def test_history_limit_parameter_and_model_context_window(serve: ServerFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    chat = EchoChat()
    server = serve(
        chat=chat, settings=make_settings(tmp_path / "d", history_limit=4, system_prompt="Be brief.")
    )
    async with httpx.AsyncClient(base_url=server.url) as client:
        for i in range(5):
            await client.post("/api/chat", json={"message": f"m{i}", "sessionId": SID})
        r = await client.get("/api/history", params={"sessionId": SID, "limit": 3})
        assert [m["content"] for m in r.json()["messages"]] == ["You said: m3", "m4", "You said: m4"]
        assert len(await history(client)) == 10  # storage keeps everything
    last = chat.requests[-1].messages
    assert last[0].role == "system" and last[0].content == "Be brief."
    # system + the last 4 earlier messages + the new one
    assert [m.content for m in last[1:]] == ["m2", "You said: m2", "m3", "You said: m3", "m4"]


async def test_healthz_and_openapi(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.get("/healthz")
        assert r.status_code == 200
        assert r.json()["status"] == "ok"
        assert r.json()["chat"]["provider"] == "echo"
        spec = (await client.get("/openapi.json")).json()
        for path in ("/api/chat", "/api/transcribe", "/api/history", "/api/clear", "/api/stop", "/healthz"):
            assert path in spec["paths"]
        assert "message" in json.dumps(spec["paths"]["/api/chat"]["post"]["requestBody"])
        assert (await client.get("/docs")).status_code == 200
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")


async def test_cors_allows_configured_origins_and_not_others(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(
        chat=EchoChat(), settings=make_settings(tmp_path / "d", cors_origins=["http://localhost:3000"])
    )
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    async with httpx.AsyncClient(base_url=server.url) as client:
        ok = await client.options("/api/chat", headers={"Origin": "http://localhost:3000", **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = await client.options("/api/chat", headers={"Origin": "http://localhost:3001", **preflight})
        assert "access-control-allow-origin" not in other.headers
        bad = await client.options("/api/chat", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in bad.headers


async def test_the_users_language_reaches_the_models_prompt(serve: ServerFactory) -> None:
    chat = EchoChat()
    server = serve(chat=chat)
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/chat", json={"message": "Hallo", "sessionId": SID, "language": "de"})
        assert r.status_code == 200
        bad = await client.post(
            "/api/chat", json={"message": "x", "sessionId": SID, "language": "not a code"}
        )
        assert bad.status_code == 400 and bad.json()["field"] == "language"
        await client.post("/api/chat", json={"message": "hello", "sessionId": SID})
    assert len(chat.requests) == 2
    german, plain = (req.messages[0].content for req in chat.requests)
    assert "Reply in German" in german and "(de)" in german
    assert "Reply in" not in plain


async def test_the_app_is_served_with_security_and_cache_headers(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/", "/static/app.js"):
            r = await client.get(path)
            assert r.status_code == 200
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-content-type-options"] == "nosniff"
        api = await client.get("/healthz")
        assert api.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in api.headers
        # no inline script in the page: the policy above would block it
        assert "<script>" not in (await client.get("/")).text
