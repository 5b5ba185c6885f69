"""ConversationStore on SQLite: the sessions table and an FTS5 index of messages (migration 4).

Triggers on `messages` keep both in step with every write the Store makes, whoever makes it: an
insert makes or touches its session's row; the index holds every finished message's text (what
history shows), so a pending reply's partial saves cost it nothing, and the final text, a barge-in's
cut-back, a crash's recovered `failed` text, a clear and a delete replace or remove its entry.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

import aiosqlite

from parley.errors import NotFound
from parley.store.base import Message
from parley.store.conversations import (
    MARK_CLOSE,
    MARK_OPEN,
    SNIPPET_TOKENS,
    Conversation,
    ConversationStore,
    ImportedConversation,
    SearchHit,
    Term,
    conversation_from_row,
    marked,
)

_OWNER = "substr({0}, 1, instr({0}, '/') - 1)"
#: which messages the index holds: the finished ones with text
_INDEXED = "{0}.status != 'pending' AND {0}.content != ''"

MIGRATION = f"""
CREATE TABLE sessions (
    key         TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    title       TEXT    NOT NULL DEFAULT '',
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL
);
CREATE INDEX sessions_by_activity ON sessions (owner, updated_at, key);
INSERT INTO sessions (key, owner, title, created_at, updated_at)
    SELECT session_id, {_OWNER.format("session_id")}, '', min(created_at), max(created_at)
    FROM messages GROUP BY session_id;
UPDATE sessions SET title = coalesce((
    SELECT trim(substr(replace(replace(content, char(10), ' '), char(13), ' '), 1, 60))
    FROM messages WHERE session_id = sessions.key AND role = 'user' ORDER BY id LIMIT 1), '');
CREATE TRIGGER messages_touch_session AFTER INSERT ON messages BEGIN
    INSERT INTO sessions (key, owner, title, created_at, updated_at)
    VALUES (new.session_id, {_OWNER.format("new.session_id")}, '', new.created_at, new.created_at)
    ON CONFLICT (key) DO UPDATE SET updated_at = max(updated_at, excluded.updated_at);
END;
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts (rowid, content) SELECT id, content FROM messages m WHERE {_INDEXED.format("m")};
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN {_INDEXED.format("new")} BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, status ON messages
WHEN {_INDEXED.format("old")} OR {_INDEXED.format("new")} BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content)
        SELECT 'delete', old.id, old.content WHERE {_INDEXED.format("old")};
    INSERT INTO messages_fts (rowid, content) SELECT new.id, new.content WHERE {_INDEXED.format("new")};
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN {_INDEXED.format("old")} BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
"""


#: how many of the newest matching messages a search ranks
RANK_WINDOW = 5000

_CONVERSATION = (
    "SELECT s.key, s.title, s.created_at, s.updated_at, "
    "(SELECT COUNT(*) FROM messages m WHERE m.session_id = s.key AND m.status NOT IN ('pending', 'replaced')) "
    "FROM sessions s"
)


def fts5_query(terms: tuple[Term, ...]) -> str:
    """Terms as an FTS5 MATCH expression: each a quoted string (so only the tokenizer reads it), ANDed."""
    return " ".join('"' + t.text.replace('"', '""') + '"' + ("*" if t.prefix else "") for t in terms)


def _owner_range(owner: str) -> tuple[str, str]:
    # "<owner>/" up to "<owner>0" ('0' follows '/'): a range on messages' session index
    return owner + "/", owner + "0"


class SQLiteConversations(ConversationStore):
    """Mixed into SQLiteStore, which owns the connection (`db`) and the messages."""

    if TYPE_CHECKING:  # provided by the SQLiteStore this is mixed into

        @property
        def db(self) -> aiosqlite.Connection: ...

        async def list_messages(self, session_id: str, *, limit: int | None = None) -> list[Message]: ...

    async def list_conversations(
        self, owner: str, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[Conversation]:
        sql = _CONVERSATION + " WHERE s.owner = ?"
        params: tuple[object, ...] = (owner,)
        if before is not None:
            sql += " AND (s.updated_at < ? OR (s.updated_at = ? AND s.key < ?))"
            params += (before[0], before[0], before[1])
        sql += " ORDER BY s.updated_at DESC, s.key DESC LIMIT ?"
        async with self.db.execute(sql, (*params, limit)) as cur:
            return [conversation_from_row(r) for r in await cur.fetchall()]

    async def get_conversation(self, key: str) -> Conversation | None:
        async with self.db.execute(_CONVERSATION + " WHERE s.key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return None if row is None else conversation_from_row(row)

    async def create_conversation(self, key: str, title: str = "") -> Conversation:
        now = time.time()
        await self.db.execute(
            "INSERT INTO sessions (key, owner, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            (key, key.partition("/")[0], title, now, now),
        )
        await self.db.commit()
        made = await self.get_conversation(key)
        assert made is not None
        return made

    async def rename_conversation(self, key: str, title: str) -> Conversation:
        cur = await self.db.execute("UPDATE sessions SET title = ? WHERE key = ?", (title, key))
        await self.db.commit()
        if cur.rowcount == 0:
            raise NotFound("no such conversation", field="sessionId")
        renamed = await self.get_conversation(key)
        assert renamed is not None
        return renamed

    async def set_first_title(self, key: str, title: str) -> bool:
        cur = await self.db.execute(
            "UPDATE sessions SET title = ? WHERE key = ? AND title = ''", (title, key)
        )
        await self.db.commit()
        return cur.rowcount > 0

    async def delete_conversation(self, key: str) -> bool:
        await self.db.execute("DELETE FROM messages WHERE session_id = ?", (key,))
        cur = await self.db.execute("DELETE FROM sessions WHERE key = ?", (key,))
        await self.db.commit()
        return cur.rowcount > 0

    async def conversation_count(self, owner: str) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM sessions WHERE owner = ?", (owner,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def search(
        self, owner: str, terms: tuple[Term, ...], *, limit: int, key: str | None = None
    ) -> list[SearchHit]:
        match = fts5_query(terms)
        params: tuple[str, ...]
        if key is not None:
            scope, params = "m.session_id = ?", (key,)
        else:
            scope, params = "m.session_id >= ? AND m.session_id < ?", _owner_range(owner)
        # Ranked first, snippets after for the page only: snippet() in the ranked query would run
        # for every match before the sort. bm25 ranks the newest RANK_WINDOW matches, not all: FTS5
        # walks its matches newest first and stops there, so a word in every tenth of a million
        # messages costs about what a rarer one does (bench/search.py).
        async with self.db.execute(
            "SELECT w.id, m.session_id, m.role, m.created_at, s.title, instr(m.content, ?) + instr(m.content, ?) "
            "FROM (SELECT f.rowid AS id, f.rank AS rank FROM messages_fts f JOIN messages m ON m.id = f.rowid "
            f"WHERE messages_fts MATCH ? AND {scope} AND m.status != 'replaced' ORDER BY f.rowid DESC LIMIT {RANK_WINDOW}) w "
            "JOIN messages m ON m.id = w.id JOIN sessions s ON s.key = m.session_id ORDER BY w.rank LIMIT ?",
            (MARK_OPEN, MARK_CLOSE, match, *params, limit),
        ) as cur:
            ranked = list(await cur.fetchall())
        if not ranked:
            return []
        ids = [int(r[0]) for r in ranked]
        async with self.db.execute(
            f"SELECT rowid, snippet(messages_fts, 0, ?, ?, '…', {SNIPPET_TOKENS}) FROM messages_fts "
            f"WHERE messages_fts MATCH ? AND rowid IN ({', '.join('?' * len(ids))})",
            (MARK_OPEN, MARK_CLOSE, match, *ids),
        ) as cur:
            snippets = {int(r[0]): str(r[1]) for r in await cur.fetchall()}
        hits = []
        for row in ranked:
            text, ranges = marked(snippets.get(int(row[0]), ""))
            if row[5]:  # the text holds a marker character itself: no highlights rather than wrong ones
                ranges = ()
            hits.append(SearchHit(str(row[1]), str(row[4]), int(row[0]), row[2], text, ranges, float(row[3])))
        return hits

    async def export_conversations(
        self, owner: str, key: str | None = None
    ) -> list[tuple[Conversation, list[Message]]]:
        if key is not None:
            found = await self.get_conversation(key)
            if found is None:
                raise NotFound("no such conversation", field="sessionId")
            conversations = [found]
        else:
            async with self.db.execute(
                _CONVERSATION + " WHERE s.owner = ? ORDER BY s.updated_at DESC, s.key DESC", (owner,)
            ) as cur:
                conversations = [conversation_from_row(r) for r in await cur.fetchall()]
        return [(c, await self.list_messages(c.key)) for c in conversations]

    async def import_conversations(
        self, owner: str, conversations: list[ImportedConversation], ids: list[str]
    ) -> list[Conversation]:
        keys = [f"{owner}/{i}" for i in ids]
        sessions = [
            (k, owner, c.title, c.created_at, c.updated_at) for k, c in zip(keys, conversations, strict=True)
        ]
        messages = [
            (k, m.turn_id, m.role, m.content, m.status.value, m.created_at, m.error, m.finish_reason)
            for k, c in zip(keys, conversations, strict=True)
            for m in c.messages
        ]
        marks = ", ".join("?" * len(keys))
        async with self.db.execute(f"SELECT key FROM sessions WHERE key IN ({marks})", keys) as cur:
            taken = {str(row[0]) for row in await cur.fetchall()}
        if taken:
            raise sqlite3.IntegrityError(f"UNIQUE constraint failed: sessions.key ({len(taken)} taken)")
        try:
            await self.db.executemany(
                "INSERT INTO sessions (key, owner, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                sessions,
            )
            await self.db.executemany(
                "INSERT INTO messages (session_id, turn_id, role, content, status, created_at, error, "
                "finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                messages,
            )
            await self.db.commit()
        except BaseException:
            # Not a rollback: the connection's open transaction may hold other sessions' writes.
            # The keys were free just before (checked above), so removing them takes back what
            # this import wrote.
            await self._forget(keys)
            raise
        made = [await self.get_conversation(k) for k in keys]
        return [c for c in made if c is not None]

    async def _forget(self, keys: list[str]) -> None:
        marks = ", ".join("?" * len(keys))
        await self.db.execute(f"DELETE FROM messages WHERE session_id IN ({marks})", keys)
        await self.db.execute(f"DELETE FROM sessions WHERE key IN ({marks})", keys)
        await self.db.commit()
