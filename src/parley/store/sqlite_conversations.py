"""ConversationStore on SQLite: the sessions table (migration 4) and an FTS5 index of messages
(migration 8).

Triggers on `messages` keep both in step with every write the Store makes, whoever makes it: an
insert makes or touches its session's row; the index holds every finished message's text (what
history shows), so a pending reply's partial saves cost it nothing, and the final text, a barge-in's
cut-back, a crash's recovered `failed` text, a clear and a delete replace or remove its entry.

The index is keyed by its owner as well as its words: each entry holds its owner and its
conversation as one token each (a private-use mark and the hex of the id, whatever the id holds;
the mark is taken out of the indexed text, so no word is such a token), so a search finds the
owner's matches in the index instead of looking up every match's row to see whose it is. New entries are written
in batches: a finished message is queued (`search_queue`, one small row) and the queue is indexed
in one transaction before every search and every `INDEX_BATCH` queued messages. A commit per
message would write an index segment per message, and merging those costs a turn more than all its
other writes; a search still sees every finished message. Removing an indexed entry (a clear, a
delete, an edit's `replaced`) stays immediate, as FTS5 needs the text that was indexed.
"""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger("parley.store")

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


#: which messages the index holds from migration 8: finished, with text, not replaced by an edit
_SEARCHABLE = "{0}.status NOT IN ('pending', 'replaced') AND {0}.content != ''"
#: starts the owner and conversation tokens: a private-use character, which unicode61 keeps in a
#: token, taken out of every message's indexed text, so no word of any message is such a token
TOKEN_MARK = "\ue002"
_MARK_SQL = "char(57346)"
#: an entry's owner token: the mark and the hex of the owner id (one token, whatever the id holds)
_OWNER_TOKEN = _MARK_SQL + " || hex(substr({0}.session_id, 1, instr({0}.session_id, '/') - 1))"
#: an entry's conversation token: the mark and the hex of its session key
_KEY_TOKEN = _MARK_SQL + " || hex({0}.session_id)"
#: the text indexed (and read back for snippets): the message's, without the mark
_TEXT = "replace({0}.content, " + _MARK_SQL + ", ' ')"
_NOT_QUEUED = "NOT EXISTS (SELECT 1 FROM search_queue q WHERE q.id = {0}.id)"

#: 8: the index keyed by owner and written in batches (see the module's docstring); rebuilt from
#: the messages in the migration, so it works on a database of any age
SEARCH_MIGRATION = f"""
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_update;
DROP TRIGGER messages_fts_delete;
DROP TABLE messages_fts;
CREATE VIEW messages_searchable AS
    SELECT m.id AS id, {_TEXT.format("m")} AS content, {_OWNER_TOKEN.format("m")} AS owner,
        {_KEY_TOKEN.format("m")} AS conversation
    FROM messages m WHERE {_SEARCHABLE.format("m")};
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, owner, conversation, content='messages_searchable', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts (rowid, content, owner, conversation)
    SELECT id, content, owner, conversation FROM messages_searchable;
CREATE TABLE search_queue (id INTEGER PRIMARY KEY);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN {_SEARCHABLE.format("new")} BEGIN
    INSERT OR IGNORE INTO search_queue (id) VALUES (new.id);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, status ON messages
WHEN {_SEARCHABLE.format("old")} OR {_SEARCHABLE.format("new")} BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content, owner, conversation)
        SELECT 'delete', old.id, {_TEXT.format("old")}, {_OWNER_TOKEN.format("old")},
            {_KEY_TOKEN.format("old")}
        WHERE {_SEARCHABLE.format("old")} AND {_NOT_QUEUED.format("old")};
    INSERT OR IGNORE INTO search_queue (id) SELECT new.id WHERE {_SEARCHABLE.format("new")};
    DELETE FROM search_queue WHERE id = old.id AND NOT ({_SEARCHABLE.format("new")});
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN {_SEARCHABLE.format("old")} BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content, owner, conversation)
        SELECT 'delete', old.id, {_TEXT.format("old")}, {_OWNER_TOKEN.format("old")},
            {_KEY_TOKEN.format("old")}
        WHERE {_NOT_QUEUED.format("old")};
    DELETE FROM search_queue WHERE id = old.id;
END;
"""

#: how many of the newest matching messages a search ranks
RANK_WINDOW = 5000
#: queued messages that make the next write index the queue (a search indexes it first anyway):
#: a batch of 1,000 costs a turn about a twentieth of what batches of 64 do (bench/search.py), and
#: a search after a quiet spell indexes at most that many first (about 15 ms)
INDEX_BATCH = 1000

_CONVERSATION = (
    "SELECT s.key, s.title, s.created_at, s.updated_at, "
    "(SELECT COUNT(*) FROM messages m WHERE m.session_id = s.key AND m.status NOT IN ('pending', 'replaced')) "
    "FROM sessions s"
)


def fts5_query(terms: tuple[Term, ...]) -> str:
    """Terms as an FTS5 MATCH expression: each a quoted string (so only the tokenizer reads it), ANDed."""
    return " ".join(
        '"' + t.text.replace(TOKEN_MARK, " ").replace('"', '""') + '"' + ("*" if t.prefix else "")
        for t in terms
    )


def scoped_match(owner: str | None, terms: tuple[Term, ...], key: str | None = None) -> str:
    """The MATCH expression of `terms` among conversation `key`'s entries, else `owner`'s (None:
    the whole index): the scope's token as the index made it, and each term.

    No column filter: no word can be a token of the scope (TOKEN_MARK), and a filter would have
    FTS5 read every candidate's positions.
    """
    words = fts5_query(terms)
    if key is not None:
        return f'"{TOKEN_MARK}{key.encode().hex().upper()}" AND {words}'
    if owner is not None:
        return f'"{TOKEN_MARK}{owner.encode().hex().upper()}" AND {words}'
    return words


_INDEX_QUEUED = """
BEGIN IMMEDIATE;
INSERT INTO messages_fts (rowid, content, owner, conversation)
    SELECT s.id, s.content, s.owner, s.conversation
    -- the queue drives: an empty queue's statistics would have the planner scan the messages
    FROM search_queue q CROSS JOIN messages_searchable s ON s.id = q.id;
DELETE FROM search_queue;
COMMIT;
"""


class SQLiteConversations(ConversationStore):
    """Mixed into SQLiteStore, which owns the connection (`db`) and the messages."""

    #: messages queued for the index since the last batch (this connection's writes)
    _queued = 0

    if TYPE_CHECKING:  # provided by the SQLiteStore this is mixed into
        _fence_lock: asyncio.Lock

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

    async def set_first_title(self, key: str, title: str, *, replacing: str = "") -> bool:
        cur = await self.db.execute(
            "UPDATE sessions SET title = ? WHERE key = ? AND title = ?", (title, key, replacing)
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
        await self.index_queued_or_later("a search")  # else the newest may be missing
        # bm25 counts the rows of every part of the query once per search, the owner's token too:
        # a server with one user (PARLEY_AUTH=none) searches the whole index without it
        sole = key is None and await self._sole_owner(owner)
        match = scoped_match(None if sole else owner, terms, key)
        # The owner's (or the conversation's) matches come from the index alone, newest first,
        # and bm25 (the token columns weigh nothing) ranks the newest RANK_WINDOW of them: a word
        # in every tenth of a million messages costs about what a rarer one does
        # (bench/search.py). Rows are read, and snippets made, for the page alone.
        async with self.db.execute(
            "SELECT w.id, m.session_id, m.role, m.created_at, s.title, instr(m.content, ?) + instr(m.content, ?) "
            "FROM (SELECT id, score FROM (SELECT rowid AS id, bm25(messages_fts, 1.0, 0.0, 0.0) AS score "
            f"FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT {RANK_WINDOW}) "
            "ORDER BY score LIMIT ?) w "
            "JOIN messages m ON m.id = w.id JOIN sessions s ON s.key = m.session_id ORDER BY w.score",
            (MARK_OPEN, MARK_CLOSE, match, limit),
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

    async def _sole_owner(self, owner: str) -> bool:
        """Whether no one but `owner` has conversations (two seeks on the sessions' owner index)."""
        async with self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE owner < ?) "
            "OR EXISTS (SELECT 1 FROM sessions WHERE owner > ?)",
            (owner, owner),
        ) as cur:
            row = await cur.fetchone()
        return not (row and row[0])

    async def index_queued(self) -> None:
        """Index the queued messages (finished since the last batch), in one transaction."""
        self._queued = 0
        async with self.db.execute("SELECT EXISTS (SELECT 1 FROM search_queue)") as cur:
            row = await cur.fetchone()
        if not (row and row[0]):
            return  # a search with nothing queued stays a read
        # One script, so one call on the connection's thread: no other write on this connection
        # can queue a message between indexing the queue and emptying it (it would be lost to the
        # index, and its removal would later ask FTS5 to delete what it never held). It commits
        # what the connection has open first, as every write here does; under the fence lock, so
        # not between a fenced write's check and its statements.
        async with self._fence_lock:
            await self.db.executescript(_INDEX_QUEUED)

    async def index_queued_or_later(self, why: str) -> None:
        """index_queued, where a failure (another process holding the database past the busy
        timeout) must not fail what asked: the queue keeps its rows for the next batch."""
        try:
            await self.index_queued()
        except sqlite3.Error as exc:
            log.warning("search index: the queue is indexed later (%s): %s", why, exc)
            await self.db.commit()  # ends the script's transaction if it stopped inside it

    async def queued_for_index(self, count: int) -> None:
        """`count` more messages were queued: index the queue once a batch is full."""
        self._queued += count
        if self._queued >= INDEX_BATCH:
            await self.index_queued_or_later("a full batch")

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
            await self.index_queued_or_later("an import")
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
