"""Conversations over real HTTP and WebSockets: list, titles, new/rename/delete, search, export/import."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from parley.providers.testing import EchoChat
from parley.standins.server import BackgroundServer
from parley.web.importing import IMPORT_MAX_BYTES
from tests.auth.test_token_mode import TOKEN_SETTINGS, add_user, bearer
from tests.conftest import ServerFactory, make_settings


def ws_url(server: BackgroundServer, sid: str) -> str:
    return server.url.replace("http://", "ws://") + f"/ws?sessionId={sid}"


async def until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] == kind:
            return event


async def chat(client: httpx.AsyncClient, sid: str, text: str, **kw: Any) -> None:
    r = await client.post("/api/chat", json={"sessionId": sid, "message": text}, **kw)
    assert r.status_code == 200, r.text


async def sessions(client: httpx.AsyncClient, **kw: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/sessions", **kw)
    assert r.status_code == 200, r.text
    listed: list[dict[str, Any]] = r.json()["sessions"]
    return listed


async def test_the_first_turn_titles_the_conversation_and_tells_its_sockets(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        websockets.connect(ws_url(server, "s1")) as ws,
    ):
        await until(ws, "connected")
        await chat(client, "s1", "Plan a trip to Lisbon with my two kids next spring please")
        reply = await until(ws, "reply")
        titled = await until(ws, "title")
        assert reply["sessionId"] == titled["sessionId"] == "s1"
        assert titled["title"] == "Plan a trip to Lisbon with my two…"
        await chat(client, "s1", "And then Porto")
        (listed,) = await sessions(client)
        assert (listed["sessionId"], listed["title"], listed["messageCount"]) == ("s1", titled["title"], 4)
        r = await client.patch("/api/sessions/s1", json={"title": "  Family   trip "})
        assert r.status_code == 200 and r.json()["title"] == "Family trip"
        assert (await until(ws, "title"))["title"] == "Family trip"
        assert (await sessions(client))[0]["title"] == "Family trip"


async def test_new_sessions_list_newest_first_in_pages(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        made = []
        for i in range(5):
            r = await client.post("/api/sessions", json={"title": f"chat {i}"} if i else None)
            assert r.status_code == 201, r.text
            made.append(r.json())
        assert made[0]["title"] == "" and made[0]["messageCount"] == 0
        await chat(client, made[0]["sessionId"], "now the newest")
        first = (await client.get("/api/sessions?limit=2")).json()
        assert first["sessions"][0]["sessionId"] == made[0]["sessionId"]
        rest = (await client.get("/api/sessions", params={"limit": 10, "before": first["next"]})).json()
        ids = [s["sessionId"] for s in first["sessions"] + rest["sessions"]]
        assert sorted(ids) == sorted(m["sessionId"] for m in made) and rest["next"] is None
        r = await client.get("/api/sessions?before=nonsense")
        assert r.status_code == 400 and r.json()["field"] == "before"


async def test_delete_removes_messages_tells_live_sockets_and_closes_them(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        await chat(client, "gone", "pelican facts")
        await chat(client, "kept", "pelican jokes")
        async with websockets.connect(ws_url(server, "gone")) as ws:
            await until(ws, "connected")
            r = await client.delete("/api/sessions/gone")
            assert r.status_code == 200 and r.json() == {"deleted": True, "sessionId": "gone"}
            assert (await until(ws, "deleted"))["sessionId"] == "gone"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
        assert [s["sessionId"] for s in await sessions(client)] == ["kept"]
        assert (await client.get("/api/history?sessionId=gone")).json()["messages"] == []
        hits = (await client.get("/api/search?q=pelican")).json()["results"]
        assert {h["sessionId"] for h in hits} == {"kept"}
        r = await client.delete("/api/sessions/gone")
        assert r.status_code == 404 and r.json()["field"] == "sessionId"


async def test_search_over_fifty_messages(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    topics = ["weather", "rain", "sunny", "cloud", "wind"]
    async with httpx.AsyncClient(base_url=server.url) as client:
        for i in range(25):  # each turn stores the message and its echo: 50 messages
            if i == 3:
                text = "the striped zebra crossed the savanna"
            elif i == 9:
                text = "zebra zebra on the savanna, savanna zebra"
            elif i == 17:
                text = "photosynthesis needs light"
            else:
                text = f"note {i} on the {topics[i % 5]}"
            await chat(client, "s1" if i % 2 else "s2", text)

        async def find(q: str, **params: Any) -> list[dict[str, Any]]:
            r = await client.get("/api/search", params={"q": q, **params})
            assert r.status_code == 200, r.text
            found: list[dict[str, Any]] = r.json()["results"]
            return found

        hits = await find("photosynthesis")
        assert [(h["role"], h["sessionId"]) for h in hits] == [("user", "s1"), ("assistant", "s1")] or [
            (h["role"], h["sessionId"]) for h in hits
        ] == [("assistant", "s1"), ("user", "s1")]
        assert all(h["snippet"][s:e].lower() == "photosynthesis" for h in hits for s, e in h["highlights"])
        ranked = await find("savanna zebra")
        assert len(ranked) == 4 and "zebra zebra" in ranked[0]["snippet"]
        assert len(await find('"crossed the savanna"')) == 2
        assert await find('"savanna crossed"') == []
        assert len(await find("photo*")) == 2 and await find("photo") == []
        assert len(await find("zebra", sessionId="s2")) == 0
        assert len(await find("zebra", sessionId="s1")) == 4
        assert len(await find("weather", limit=3)) == 3
        for q, limit in (("", None), ("x" * 10_000, 256), ('"" ** ()', None)):
            r = await client.get("/api/search", params={"q": q})
            assert r.status_code == 400 and r.json()["field"] == "q", r.text
            assert r.json().get("limit") == limit


EXPORT: dict[str, Any] = {
    "format": "parley",
    "version": 1,
    "sessions": [
        {
            "title": "Statuses",
            "messages": [
                {
                    "role": "user",
                    "content": "q1",
                    "status": "complete",
                    "created_at": "2026-01-02T03:04:05.006Z",
                },
                {"role": "assistant", "content": "a1 cut", "status": "interrupted", "turnId": "t1"},
                {"role": "user", "content": "q2 ✓ ünï", "status": "complete"},
                {"role": "assistant", "content": "", "status": "failed", "error": "upstream said no"},
                {"role": "user", "content": "q3", "status": "complete"},
                {"role": "assistant", "content": "a3 stop", "status": "cancelled"},
                {"role": "assistant", "content": "a4", "status": "complete", "finishReason": "length"},
            ],
        },
        {"title": "Empty", "messages": []},
    ],
}


def _kept(doc: dict[str, Any]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    return [
        (
            s["title"],
            [
                (m["role"], m["content"], m["status"], m.get("error"), m.get("finishReason"))
                for m in s["messages"]
            ],
        )
        for s in doc["sessions"]
    ]


async def test_export_then_import_gives_the_same_messages(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        await chat(client, "live", "a real turn")
        r = await client.post("/api/import", json=EXPORT)
        assert r.status_code == 201, r.text
        imported = r.json()["sessions"]
        assert [(s["title"], s["messageCount"]) for s in imported] == [("Statuses", 7), ("Empty", 0)]
        first = imported[0]["sessionId"]
        r = await client.get("/api/export", params={"sessionId": first})
        assert r.headers["content-disposition"] == f'attachment; filename="parley-{first}.json"'
        one = r.json()
        assert _kept(one) == _kept({"sessions": EXPORT["sessions"][:1]})
        assert one["sessions"][0]["messages"][0]["created_at"] == "2026-01-02T03:04:05.006Z"

        everything = (await client.get("/api/export?format=json")).json()
        assert len(everything["sessions"]) == 3
        again = (await client.post("/api/import", json=everything)).json()["sessions"]
        assert len(again) == 3 and not {s["sessionId"] for s in again} & {s["sessionId"] for s in imported}
        re_exported = [
            (await client.get("/api/export", params={"sessionId": s["sessionId"]})).json()["sessions"][0]
            for s in again
        ]
        assert _kept({"sessions": re_exported}) == _kept(everything)

        md = await client.get("/api/export", params={"sessionId": first, "format": "markdown"})
        assert md.headers["content-type"].startswith("text/markdown")
        assert md.headers["content-disposition"].endswith('.md"')
        assert md.text.startswith("# Statuses") and "**Assistant**" in md.text and "(interrupted)" in md.text


async def test_a_chatgpt_export_imports_its_current_branch(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())

    def node(nid: str, parent: str | None, role: str | None, text: str) -> dict[str, Any]:
        message = None
        if role:
            message = {
                "author": {"role": role},
                "content": {"content_type": "text", "parts": [text]},
                "create_time": 1700000000.5,
            }
        return {"id": nid, "parent": parent, "message": message}

    conversations = [
        {
            "title": "From ChatGPT",
            "create_time": 1700000000.0,
            "update_time": 1700000100.0,
            "current_node": "d",
            "mapping": {
                "root": node("root", None, None, ""),
                "s": node("s", "root", "system", "be nice"),
                "a": node("a", "s", "user", "hi there"),
                "b": node("b", "a", "assistant", "an old answer"),
                "c": node("c", "a", "assistant", "hello!"),
                "d": node("d", "c", "user", "bye"),
            },
        }
    ]
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/import", json=conversations)
        assert r.status_code == 201, r.text
        (made,) = r.json()["sessions"]
        history = (await client.get("/api/history", params={"sessionId": made["sessionId"]})).json()
        assert [(m["role"], m["content"]) for m in history["messages"]] == [
            ("user", "hi there"),
            ("assistant", "hello!"),
            ("user", "bye"),
        ]
        assert made["title"] == "From ChatGPT"


async def test_a_bad_import_names_the_field_and_imports_nothing(serve: ServerFactory) -> None:
    server = serve(chat=EchoChat())
    async with httpx.AsyncClient(base_url=server.url) as client:
        bad_role = json.loads(json.dumps(EXPORT))
        bad_role["sessions"][1]["messages"] = [{"role": "robot", "content": "x"}]
        bad_status = json.loads(json.dumps(EXPORT))
        bad_status["sessions"][0]["messages"][2]["status"] = "pending"
        cases: list[tuple[Any, int, str]] = [
            (bad_role, 400, "sessions[1].messages[0].role"),
            (bad_status, 400, "sessions[0].messages[2].status"),
            ({"sessions": "nope"}, 400, "sessions"),
            (
                {"sessions": [{"messages": [{"role": "user", "content": 5}]}]},
                400,
                "sessions[0].messages[0].content",
            ),
            (
                {"sessions": [{"messages": [{"role": "user", "content": "x", "created_at": "yesterday"}]}]},
                400,
                "sessions[0].messages[0].created_at",
            ),
            ({"hello": 1}, 400, "body"),
        ]
        for body, status, field in cases:
            r = await client.post("/api/import", json=body)
            assert (r.status_code, r.json()["field"]) == (status, field), r.text
        r = await client.post(
            "/api/import", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert (r.status_code, r.json()["field"]) == (400, "body")
        r = await client.post("/api/import", content=b"{}", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        huge = {"sessions": [{"messages": [{"role": "user", "content": "y" * (IMPORT_MAX_BYTES // 4)}] * 5}]}
        r = await client.post("/api/import", json=huge)
        assert (r.status_code, r.json()["field"], r.json()["limit"]) == (413, "body", IMPORT_MAX_BYTES)
        # streamed without a length: still stopped at the limit

        async def chunks() -> Any:
            for _ in range(IMPORT_MAX_BYTES // 65536 + 2):
                yield b"x" * 65536

        r = await client.post("/api/import", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert await sessions(client) == []
        assert (await client.get("/api/export")).json()["sessions"] == []


@pytest.fixture
def token_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: ServerFactory) -> BackgroundServer:
    data = tmp_path / "data"
    monkeypatch.setenv("PARLEY_DATA_DIR", str(data))
    monkeypatch.delenv("PARLEY_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return serve(chat=EchoChat(), settings=make_settings(data, **TOKEN_SETTINGS))


async def test_users_never_see_each_others_conversations(
    token_server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = bearer(add_user(capsys, "alice")), bearer(add_user(capsys, "bob"))
    async with httpx.AsyncClient(base_url=token_server.url) as client:
        await chat(client, "s1", "my aardvark diary", headers=alice)
        assert (await sessions(client, headers=bob)) == []
        assert [s["sessionId"] for s in await sessions(client, headers=alice)] == ["s1"]
        r = await client.get("/api/search?q=aardvark", headers=bob)
        assert r.status_code == 200 and r.json()["results"] == []
        assert len((await client.get("/api/search?q=aardvark", headers=alice)).json()["results"]) == 2
        assert (
            await client.patch("/api/sessions/s1", json={"title": "mine"}, headers=bob)
        ).status_code == 404
        assert (await client.delete("/api/sessions/s1", headers=bob)).status_code == 404
        assert (await client.get("/api/export?sessionId=s1", headers=bob)).status_code == 404
        assert (await client.get("/api/export", headers=bob)).json()["sessions"] == []
        # bob imports alice's export: his own new copy, alice's stays hers alone
        exported = (await client.get("/api/export", headers=alice)).json()
        r = await client.post("/api/import", json=exported, headers=bob)
        assert r.status_code == 201
        (copy,) = r.json()["sessions"]
        assert (await client.delete(f"/api/sessions/{copy['sessionId']}", headers=alice)).status_code == 404
        assert len((await client.get("/api/search?q=aardvark", headers=alice)).json()["results"]) == 2
        assert [s["title"] for s in await sessions(client, headers=alice)] == ["my aardvark diary"]
