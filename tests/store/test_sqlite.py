"""What only the SQLite store does: its file, WAL mode and PRAGMA user_version migrations.

The backend-agnostic contract is tests/store/test_contract.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from parley.store.base import MessageStatus
from parley.store.sqlite import MIGRATIONS, SQLiteStore


async def test_schema_is_versioned_wal_and_reopening_migrates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    for _ in range(2):
        s = SQLiteStore(path)
        await s.open()
        assert await s.schema_version() == len(MIGRATIONS)
        await s.add_message("s", "t", "user", "kept")
        await s.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2


async def test_a_version_1_database_gains_the_finish_reason_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # as the first release left it
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        db.execute(
            "INSERT INTO messages (session_id, turn_id, role, content, status, created_at) "
            "VALUES ('s', 't', 'assistant', 'old reply', 'complete', 0)"
        )
    s = SQLiteStore(path)
    await s.open()
    try:
        assert await s.schema_version() == len(MIGRATIONS) >= 2
        # (migration 3 gave sessions of the time before users to the local user)
        [old] = await s.list_messages("local/s")
        assert (old.content, old.finish_reason) == ("old reply", None)
        new = await s.add_message("local/s", "t2", "assistant", "", MessageStatus.PENDING)
        await s.finish_message(new.id, "cut", MessageStatus.COMPLETE, finish_reason="length")
        assert [m.finish_reason for m in await s.list_messages("local/s")] == [None, "length"]
    finally:
        await s.aclose()


async def test_a_starting_node_fails_only_its_own_and_a_previous_releases_pending_replies(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.db"
    a, b = SQLiteStore(path, node="a"), SQLiteStore(path, node="b")
    await a.open()
    await b.open()
    try:
        _, live = await a.begin_turn("local/s", "t", "q")
        await b.begin_turn("local/s2", "t", "q")
        async with b.db.execute(
            "INSERT INTO messages (session_id, turn_id, role, content, status, created_at) "
            "VALUES ('local/old', 't', 'assistant', 'x', 'pending', 0)"
        ):
            pass  # a pending reply of a release that kept no node
        await b.db.commit()
        assert await b.fail_pending("restarted") == 2
        done = await a.finish_message(live.id, "all", MessageStatus.COMPLETE)
        assert done.status is MessageStatus.COMPLETE
        assert (await b.list_messages("local/s2"))[1].status is MessageStatus.FAILED
    finally:
        await a.aclose()
        await b.aclose()


def test_the_store_writes_as_parley_node_id_else_the_host_name(tmp_path: Path) -> None:
    import socket

    from parley.store.factory import build_store
    from tests.conftest import make_settings

    assert build_store(make_settings(tmp_path, node_id="edge-2")).node == "edge-2"
    assert build_store(make_settings(tmp_path)).node == socket.gethostname()
