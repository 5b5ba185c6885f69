"""What only the PostgreSQL store does: migrations under a lock, several nodes on one database,
the factory's choice of backend and its errors. The shared contract is tests/store/test_contract.py."""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from parley import cli
from parley.errors import ConfigError
from parley.providers.testing import EchoChat
from parley.store.base import MessageStatus
from parley.store.conversations import parse_query
from parley.store.factory import build_store
from parley.store.postgres import MIGRATIONS, PostgresStore
from tests.conftest import ServerFactory, make_settings


async def _versions(store: PostgresStore) -> list[int]:
    return [r[0] for r in await store.pool.fetch("SELECT version FROM schema_version ORDER BY version")]


async def test_nodes_starting_at_once_migrate_once_and_all_work(pg_url: str) -> None:
    nodes = [PostgresStore(pg_url, pool_size=2) for _ in range(4)]
    try:
        # without the advisory lock the losers fail on "relation already exists"
        await asyncio.gather(*(node.open() for node in nodes))
        for node in nodes:
            assert await node.schema_version() == len(MIGRATIONS)
        assert await _versions(nodes[0]) == list(range(1, len(MIGRATIONS) + 1))
        _, pending = await nodes[0].begin_turn("local/s", "t1", "asked on node 0")
        await nodes[1].finish_message(pending.id, "answered on node 1", MessageStatus.COMPLETE)
        assert [m.content for m in await nodes[3].list_messages("local/s")] == [
            "asked on node 0",
            "answered on node 1",
        ]
        await nodes[2].add_user("alice")
        assert (await nodes[3].user_named("alice")) is not None
    finally:
        for node in nodes:
            await node.aclose()


async def test_reopening_migrates_nothing_and_keeps_the_data(pg_url: str) -> None:
    for _ in range(2):
        s = PostgresStore(pg_url)
        await s.open()
        try:
            assert await _versions(s) == list(range(1, len(MIGRATIONS) + 1))
            await s.add_message("local/s", "t", "user", "kept")
        finally:
            await s.aclose()
    s = PostgresStore(pg_url)
    await s.open()
    try:
        assert [m.content for m in await s.list_messages("local/s")] == ["kept", "kept"]
    finally:
        await s.aclose()


async def test_a_starting_node_fails_only_its_own_unfinished_replies(pg_url: str) -> None:
    """Issue 13: node b's restart must not fail node a's reply, which is streaming right now."""
    a, b = PostgresStore(pg_url, node="a"), PostgresStore(pg_url, node="b")
    try:
        await a.open()
        _, live = await a.begin_turn("local/s", "t", "q")
        await a.save_partial(live.id, "half")
        await b.open()
        await b.begin_turn("local/s2", "t", "q")  # b's own, left by its crash
        assert await b.fail_pending("restarted") == 1
        assert [m.status for m in await b.list_messages("local/s2")] == [
            MessageStatus.COMPLETE,
            MessageStatus.FAILED,
        ]
        await a.save_partial(live.id, "more")  # a's reply is still being written
        done = await a.finish_message(live.id, "all of it", MessageStatus.COMPLETE)
        assert (done.id, done.status) == (live.id, MessageStatus.COMPLETE)
        # and a's own restart fails what a left
        _, left = await a.begin_turn("local/s3", "t", "q")
        assert await a.fail_pending("restarted") == 1
        assert (await a.list_messages("local/s3"))[1].id == left.id
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_version_2_database_moves_its_sessions_to_the_local_user(pg_url: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(pg_url)
    try:  # as a release before users left it
        await conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at FLOAT8 NOT NULL)"
        )
        for number, script in enumerate(MIGRATIONS[:2], start=1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_version VALUES ($1, 0)", number)
        await conn.execute(
            "INSERT INTO messages (session_id, turn_id, role, content, status, created_at) "
            "VALUES ('s1', 't', 'user', 'kept', 'complete', 0), ('u1/s', 't', 'user', 'owned', 'complete', 0)"
        )
    finally:
        await conn.close()
    s = PostgresStore(pg_url)
    await s.open()
    try:
        assert await s.schema_version() == len(MIGRATIONS)
        assert [m.content for m in await s.list_messages("local/s1")] == ["kept"]
        assert [m.content for m in await s.list_messages("u1/s")] == ["owned"]
        assert await s.list_messages("s1") == []
    finally:
        await s.aclose()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_the_url_scheme_picks_postgresql(tmp_path: Path, scheme: str) -> None:
    store = build_store(make_settings(tmp_path, database_url=f"{scheme}://u@127.0.0.1/db"))
    assert isinstance(store, PostgresStore)


def test_an_unknown_scheme_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_store(make_settings(tmp_path, database_url="mysql://u@127.0.0.1/db"))
    assert err.value.field == "PARLEY_DATABASE_URL" and "'mysql'" in err.value.message


def test_without_asyncpg_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # what an interpreter without it finds
    with pytest.raises(ConfigError) as err:
        build_store(make_settings(tmp_path, database_url="postgresql://u@127.0.0.1/db"))
    assert err.value.field == "PARLEY_DATABASE_URL"
    assert "pip install 'parley[postgres]'" in err.value.message


async def test_an_unreachable_server_is_named_without_the_password(unused_tcp_port: int) -> None:
    store = PostgresStore(f"postgresql://parley:hunter2-secret@127.0.0.1:{unused_tcp_port}/parley")
    with pytest.raises(ConfigError) as err:
        await store.open()
    assert err.value.field == "PARLEY_DATABASE_URL"
    assert f"127.0.0.1:{unused_tcp_port}/parley" in err.value.message
    assert "hunter2" not in err.value.message and "hunter2" not in repr(err.value.__cause__)


async def test_a_url_asyncpg_cannot_read_is_a_config_error_without_the_password() -> None:
    store = PostgresStore("postgresql://parley:hunter2-secret@127.0.0.1:notaport/parley")
    with pytest.raises(ConfigError) as err:
        await store.open()
    assert err.value.field == "PARLEY_DATABASE_URL" and "hunter2" not in err.value.message


async def test_a_missing_database_is_named(pg_url: str) -> None:
    store = PostgresStore(pg_url + "_missing")
    with pytest.raises(ConfigError) as err:
        await store.open()
    assert pg_url.rsplit("/", 1)[1] + "_missing" in err.value.message
    assert "does not exist" in err.value.message


async def test_two_servers_on_one_database_share_the_conversation(
    pg_url: str, serve: ServerFactory, tmp_path: Path
) -> None:
    """The app end to end on PostgreSQL: a turn taken by one node is the history the other serves."""
    a = serve(chat=EchoChat(), settings=make_settings(tmp_path / "a", database_url=pg_url))
    async with httpx.AsyncClient(base_url=a.url) as client:
        r = await client.post("/api/chat", json={"message": "hello there", "sessionId": "s-1"})
        assert r.status_code == 200 and r.json()["status"] == "complete"
    b = serve(chat=EchoChat(), settings=make_settings(tmp_path / "b", database_url=pg_url))
    async with httpx.AsyncClient(base_url=b.url) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        r = await client.get("/api/history", params={"sessionId": "s-1"})
    assert [(m["role"], m["content"], m["status"]) for m in r.json()["messages"]] == [
        ("user", "hello there", "complete"),
        ("assistant", "You said: hello there", "complete"),
    ]
    assert not (tmp_path / "a" / "parley.db").exists()  # nothing went to SQLite


async def test_a_version_3_database_gains_conversations_titled_by_their_first_message(pg_url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg_url)
    try:  # as a release before conversations left it
        await conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at FLOAT8 NOT NULL)"
        )
        for number, script in enumerate(MIGRATIONS[:3], start=1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_version VALUES ($1, 0)", number)
        await conn.execute(
            "INSERT INTO messages (session_id, turn_id, role, content, status, created_at) VALUES "
            "('u1/a', 't', 'user', E'plan the\\ntrip', 'complete', 5), "
            "('u1/a', 't', 'assistant', 'sure', 'complete', 7), "
            "('u1/b', 't', 'assistant', 'left pending', 'pending', 9)"
        )
    finally:
        await conn.close()
    s = PostgresStore(pg_url)
    await s.open()
    try:
        listed = await s.list_conversations("u1", limit=10)
        assert [(c.key, c.title, c.created_at, c.updated_at, c.message_count) for c in listed] == [
            ("u1/b", "", 9.0, 9.0, 0),
            ("u1/a", "plan the trip", 5.0, 7.0, 2),
        ]
        [hit] = await s.search("u1", parse_query("trip"), limit=5)  # old messages are indexed
        assert (hit.key, hit.role) == ("u1/a", "user")
        assert await s.search("u1", parse_query("pending"), limit=5) == []
    finally:
        await s.aclose()


async def test_a_user_added_by_the_cli_signs_in_on_every_node(
    pg_url: str,
    serve: ServerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`parley users add` against PostgreSQL; two token-mode servers on that database both know the token."""
    monkeypatch.setenv("PARLEY_DATABASE_URL", pg_url)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    capsys.readouterr()
    with ThreadPoolExecutor(1) as pool:  # the command runs its own event loop
        code = pool.submit(cli.main, ["users", "add", "alice"]).result()
    out = capsys.readouterr().out
    assert code == 0, out
    token = out.strip().splitlines()[-1]  # the contract: the token is the last line
    nodes = [
        serve(chat=EchoChat(), settings=make_settings(tmp_path / n, database_url=pg_url, auth="token"))
        for n in ("a", "b")
    ]
    for node in nodes:
        async with httpx.AsyncClient(base_url=node.url) as client:
            assert (await client.get("/api/me")).status_code == 401
            me = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200 and "alice" in me.text
            wrong = await client.get("/api/me", headers={"Authorization": f"Bearer {token[:-2]}xx"})
            assert wrong.status_code == 401
