"""SQLite store: one file under PARLEY_DATA_DIR, WAL mode, versioned migrations.

aiosqlite runs every statement on one connection in one worker thread, which is also what makes
writes single-writer without extra locking. Fenced writes and takes also hold `_fence_lock`, so a
take on this connection cannot fall between a write's fence check and its statements.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from parley.store.base import (
    HIDDEN_SQL,
    MESSAGE_COLUMNS,
    Message,
    MessageStatus,
    Role,
    Store,
    fenced,
    message_from_row,
)
from parley.store.sqlite_conversations import MIGRATION as CONVERSATIONS_MIGRATION
from parley.store.sqlite_conversations import SEARCH_MIGRATION, SQLiteConversations
from parley.store.sqlite_devices import MIGRATION as DEVICES_MIGRATION
from parley.store.sqlite_devices import SQLiteDevices
from parley.store.sqlite_users import SQLiteUsers

# Each entry moves the schema one version up; never edit a shipped entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE messages (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id  TEXT    NOT NULL,
        turn_id     TEXT    NOT NULL,
        role        TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
        content     TEXT    NOT NULL,
        status      TEXT    NOT NULL,
        created_at  REAL    NOT NULL,
        error       TEXT
    );
    CREATE INDEX messages_by_session ON messages (session_id, id);
    """,
    # 2: why the model stopped (a reply cut off by max_tokens is complete but says "length")
    """
    ALTER TABLE messages ADD COLUMN finish_reason TEXT;
    """,
    # 3: users. Session ids become "<owner>/<id>" (sessions/keys.py): what was stored before users
    # existed belongs to the one local user of PARLEY_AUTH=none.
    """
    UPDATE messages SET session_id = 'local/' || session_id WHERE instr(session_id, '/') = 0;
    CREATE TABLE users (
        id          TEXT    PRIMARY KEY,
        name        TEXT    NOT NULL UNIQUE,
        admin       INTEGER NOT NULL DEFAULT 0,
        disabled    INTEGER NOT NULL DEFAULT 0,
        created_at  REAL    NOT NULL
    );
    CREATE TABLE credentials (
        digest      TEXT    PRIMARY KEY,
        prefix      TEXT    NOT NULL,
        user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        kind        TEXT    NOT NULL CHECK (kind IN ('api', 'cookie')),
        created_at  REAL    NOT NULL,
        expires_at  REAL,
        revoked     INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX credentials_by_prefix ON credentials (prefix);
    CREATE TABLE usage (
        user_id      TEXT    NOT NULL,
        day          TEXT    NOT NULL,
        tokens       INTEGER NOT NULL DEFAULT 0,
        call_seconds REAL    NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, day)
    );
    """,
    # 4: conversations: a row per session (title, activity) and the full-text index of messages,
    # both kept in step by triggers (store/sqlite_conversations.py)
    CONVERSATIONS_MIGRATION,
    # 5: XiaoZhi devices: owner, pending activation code, token digest (store/sqlite_devices.py)
    DEVICES_MIGRATION,
    # 6: which node writes a pending reply, so a restarting node fails only its own
    """
    ALTER TABLE messages ADD COLUMN node TEXT;
    CREATE INDEX messages_pending ON messages (node) WHERE status = 'pending';
    """,
    # 7: fencing tokens, one row per session ever taken (never deleted): Store.take_session
    """
    CREATE TABLE fences (
        session     TEXT    PRIMARY KEY,
        fence       INTEGER NOT NULL
    );
    """,
    # 8: the search index keyed by owner, its new entries written in batches
    # (store/sqlite_conversations.py)
    SEARCH_MIGRATION,
]


class SQLiteStore(SQLiteUsers, SQLiteDevices, SQLiteConversations, Store):
    def __init__(self, path: Path | str, *, node: str = "local") -> None:
        self.path = Path(path) if str(path) != ":memory:" else path
        self.node = node
        self._db: aiosqlite.Connection | None = None
        self._fence_lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SQLiteStore used before open()")
        return self._db

    async def open(self) -> None:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(str(self.path))
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._migrate()
        await self.index_queued_or_later("what a crash left queued")

    async def _migrate(self) -> None:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the version bump rides in the same script.
            await self.db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")

    async def schema_version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def aclose(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def take_session(self, session_id: str) -> int:
        async with self._fence_lock:
            rows = await self.db.execute_fetchall(
                "INSERT INTO fences (session, fence) VALUES (?, 1) "
                "ON CONFLICT (session) DO UPDATE SET fence = fences.fence + 1 RETURNING fence",
                (session_id,),
            )
            await self.db.commit()
        return int(next(iter(rows))[0])

    async def _check_fence(self, session_id: str, fence: int) -> None:
        """Raise Fenced unless `fence` is the session's; call under `_fence_lock`, before writing.

        A write, not a read: it takes the database's write lock for the open transaction, so
        another connection's take waits for this one's commit.
        """
        cur = await self.db.execute(
            "UPDATE fences SET fence = fence WHERE session = ? AND fence = ?", (session_id, fence)
        )
        if cur.rowcount == 0:
            # ends the transaction the check opened (and its lock); it changed nothing of its own
            await self.db.commit()
            async with self.db.execute("SELECT fence FROM fences WHERE session = ?", (session_id,)) as c:
                row = await c.fetchone()
            raise fenced(session_id, fence, None if row is None else int(row[0]))

    @asynccontextmanager
    async def _fenced(self, session_id: str, fence: int | None) -> AsyncIterator[None]:
        """Around a write of the session: with a fence, checked first and held to the commit."""
        if fence is None:
            yield
            return
        async with self._fence_lock:
            await self._check_fence(session_id, fence)
            yield

    @asynccontextmanager
    async def _fenced_message(self, message_id: int, fence: int | None) -> AsyncIterator[None]:
        """`_fenced` for a write of one message, checked against the message's session."""
        if fence is None:
            yield
            return
        async with self._fence_lock:
            async with self.db.execute("SELECT session_id FROM messages WHERE id = ?", (message_id,)) as cur:
                row = await cur.fetchone()
            # no such message: nothing to guard, the write itself finds nothing
            if row is not None:
                await self._check_fence(str(row[0]), fence)
            yield

    async def add_message(
        self,
        session_id: str,
        turn_id: str,
        role: Role,
        content: str,
        status: MessageStatus = MessageStatus.COMPLETE,
        *,
        fence: int | None = None,
    ) -> Message:
        now = time.time()
        async with self._fenced(session_id, fence):
            cur = await self.db.execute(
                "INSERT INTO messages (session_id, turn_id, role, content, status, created_at, node) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session_id, turn_id, role, content, status.value, now, self.node),
            )
            await self.db.commit()
        await self.queued_for_index(1)
        assert cur.lastrowid is not None
        return Message(cur.lastrowid, session_id, turn_id, role, content, status, now)

    async def begin_turn(
        self,
        session_id: str,
        turn_id: str,
        user_text: str,
        *,
        replace_from: int | None = None,
        fence: int | None = None,
    ) -> tuple[Message, Message]:
        now = time.time()
        pending = MessageStatus.PENDING
        async with self._fenced(session_id, fence):
            if replace_from is not None:
                # Before the insert, in the same transaction (the commit below carries both).
                await self.db.execute(
                    "UPDATE messages SET status = 'replaced' WHERE session_id = ? AND id >= ? AND status != 'pending'",
                    (session_id, replace_from),
                )
            # One statement (atomic: both rows or neither) and one commit: two hops to aiosqlite's
            # thread where two add_message calls take four. No rollback on failure: the connection's
            # open transaction may hold other sessions' writes, which their own commits will carry.
            rows = await self.db.execute_fetchall(
                "INSERT INTO messages (session_id, turn_id, role, content, status, created_at, node) "
                "VALUES (?, ?, 'user', ?, 'complete', ?, ?), (?, ?, 'assistant', '', ?, ?, ?) RETURNING id",
                (
                    session_id,
                    turn_id,
                    user_text,
                    now,
                    self.node,
                    session_id,
                    turn_id,
                    pending.value,
                    now,
                    self.node,
                ),
            )
            await self.db.commit()
        await self.queued_for_index(1)
        # RETURNING's row order is unspecified; AUTOINCREMENT ids follow the VALUES order.
        user_id, reply_id = sorted(int(row[0]) for row in rows)
        return (
            Message(user_id, session_id, turn_id, "user", user_text, MessageStatus.COMPLETE, now),
            Message(reply_id, session_id, turn_id, "assistant", "", pending, now),
        )

    async def finish_message(
        self,
        message_id: int,
        content: str,
        status: MessageStatus,
        error: str | None = None,
        *,
        finish_reason: str | None = None,
        fence: int | None = None,
    ) -> Message:
        async with self._fenced_message(message_id, fence):
            await self.db.execute(
                "UPDATE messages SET content = ?, status = ?, error = ?, finish_reason = ? WHERE id = ?",
                (content, status.value, error, finish_reason, message_id),
            )
            await self.db.commit()
        await self.queued_for_index(1)
        async with self.db.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise KeyError(message_id)
        return message_from_row(row)

    async def save_partial(self, message_id: int, content: str, *, fence: int | None = None) -> None:
        # Only while pending: a save queued just before the reply's end must not overwrite it.
        async with self._fenced_message(message_id, fence):
            await self.db.execute(
                "UPDATE messages SET content = ? WHERE id = ? AND status = 'pending'", (content, message_id)
            )
            await self.db.commit()

    async def list_messages(self, session_id: str, *, limit: int | None = None) -> list[Message]:
        sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND status NOT IN ({HIDDEN_SQL}) ORDER BY id DESC"
        params: tuple[object, ...] = (session_id,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        async with self.db.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [message_from_row(r) for r in reversed(list(rows))]

    async def clear_session(self, session_id: str, *, fence: int | None = None) -> int:
        async with self._fenced(session_id, fence):
            cur = await self.db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            await self.db.commit()
        return cur.rowcount

    async def session_count(self, owner: str) -> int:
        # the conversations table (migration 4), on its (owner, ...) index: not a scan of messages
        async with self.db.execute("SELECT COUNT(*) FROM sessions WHERE owner = ?", (owner,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def session_exists(self, session_id: str) -> bool:
        async with self.db.execute("SELECT 1 FROM sessions WHERE key = ?", (session_id,)) as cur:
            return await cur.fetchone() is not None

    async def fail_pending(self, reason: str) -> int:
        cur = await self.db.execute(
            "UPDATE messages SET status = 'failed', error = ? "
            "WHERE status = 'pending' AND (node = ? OR node IS NULL)",
            (reason, self.node),
        )
        await self.db.commit()
        return cur.rowcount

    async def pending_sessions(self, limit: int = 100) -> list[str]:
        rows = await self.db.execute_fetchall(
            "SELECT DISTINCT session_id FROM messages WHERE status = 'pending' LIMIT ?", (limit,)
        )
        return [str(row[0]) for row in rows]

    async def fail_pending_session(self, session_id: str, reason: str, *, fence: int) -> list[Message]:
        async with self._fenced(session_id, fence):
            rows = await self.db.execute_fetchall(
                "UPDATE messages SET status = 'failed', error = ? "
                f"WHERE session_id = ? AND status = 'pending' RETURNING {MESSAGE_COLUMNS}",
                (reason, session_id),
            )
            await self.db.commit()
        return sorted((message_from_row(row) for row in rows), key=lambda m: m.id)

    async def ping(self) -> None:
        async with self.db.execute("SELECT 1") as cur:
            await cur.fetchone()
