"""ConversationStore on PostgreSQL: the sessions table and a tsvector index of messages (migration 4).

As on SQLite (store/sqlite_conversations.py), the database keeps both in step with every write the
Store makes, whichever node makes it: a statement-level trigger makes or touches the sessions of
the rows a statement inserts (one upsert per session, not per row), and a generated `search` column
holds the words of every finished message with text (a pending reply's partial saves leave it
NULL), indexed by GIN. Words are matched as SQLite's unicode61 tokenizer with remove_diacritics
does: lower-cased, accents removed (the `parley_search` configuration: unaccent, then simple), no
stemming.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

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

MIGRATION = """
CREATE TABLE sessions (
    key         TEXT COLLATE "C" PRIMARY KEY,
    owner       TEXT COLLATE "C" NOT NULL,
    title       TEXT NOT NULL DEFAULT '',
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_by_activity ON sessions (owner, updated_at, key);
INSERT INTO sessions (key, owner, title, created_at, updated_at)
    SELECT session_id, split_part(session_id, '/', 1), '', min(created_at), max(created_at)
    FROM messages GROUP BY session_id;
UPDATE sessions SET title = coalesce((
    SELECT trim(substr(replace(replace(content, chr(10), ' '), chr(13), ' '), 1, 60))
    FROM messages WHERE session_id = sessions.key AND role = 'user' ORDER BY id LIMIT 1), '');
CREATE FUNCTION parley_touch_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sessions AS s (key, owner, title, created_at, updated_at)
        SELECT session_id, split_part(session_id, '/', 1), '', min(created_at), max(created_at)
        FROM inserted GROUP BY session_id
    ON CONFLICT (key) DO UPDATE SET updated_at = greatest(s.updated_at, excluded.updated_at);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_touch_sessions AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION parley_touch_sessions();
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE TEXT SEARCH CONFIGURATION parley_search (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION parley_search
    ALTER MAPPING FOR hword, hword_part, word WITH unaccent, simple;
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    CASE WHEN status <> 'pending' AND content <> '' THEN to_tsvector('parley_search', content) END
) STORED;
CREATE INDEX messages_search ON messages USING gin (search);
"""

#: 8: each finished message's tsvector also holds its owner as one lexeme (`owner <md5 of the id>`:
#: a space, so no parsed word is one), so the GIN index finds a user's matches itself instead of
#: intersecting them with every message of the user from the session index
SEARCH_MIGRATION = """
ALTER TABLE messages DROP COLUMN search;
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    CASE WHEN status <> 'pending' AND content <> '' THEN
        to_tsvector('parley_search', content)
        || array_to_tsvector(ARRAY['owner ' || md5(split_part(session_id, '/', 1))])
    END
) STORED;
CREATE INDEX messages_search ON messages USING gin (search);
"""

#: how many of the newest matching messages a search ranks (as on SQLite)
RANK_WINDOW = 5000

#: ts_headline marks matches with these (as SQLite's snippet() does); private-use characters
_HEADLINE = (
    f'StartSel="{MARK_OPEN}", StopSel="{MARK_CLOSE}", MaxWords={SNIPPET_TOKENS}, '
    f"MinWords={SNIPPET_TOKENS // 2}, ShortWord=0, HighlightAll=false"
)
_ELLIPSIS = "…"

_CONVERSATION = (
    "SELECT s.key, s.title, s.created_at, s.updated_at, "
    "(SELECT count(*) FROM messages m WHERE m.session_id = s.key AND m.status NOT IN ('pending', 'replaced')) "
    "FROM sessions s"
)


def tsquery_sql(terms: tuple[Term, ...], first: int) -> tuple[str, list[str]]:
    """Terms as a tsquery expression over parameters $first.. : each term's text is only ever a
    parameter of phraseto_tsquery (so only the parser reads it), a prefix term gets `:*` on its last
    word, and the terms are ANDed."""
    parts = []
    for n, term in enumerate(terms, start=first):
        query = f"phraseto_tsquery('parley_search', ${n})"
        if term.prefix:
            query = f"(CASE WHEN {query}::text = '' THEN {query} ELSE ({query}::text || ':*')::tsquery END)"
        parts.append(query)
    return " && ".join(parts), [t.text for t in terms]


def _snippet(headline: str, content: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """ts_headline's fragment as plain text and match ranges, with `…` where it cut the message
    (as snippet() writes it)."""
    text, ranges = marked(headline)
    whole = content.strip()
    if text and not whole.startswith(text):
        text = _ELLIPSIS + text
        ranges = tuple((a + 1, b + 1) for a, b in ranges)
    if text and not whole.endswith(text.removeprefix(_ELLIPSIS)):
        text += _ELLIPSIS
    return text, ranges


class PostgresConversations(ConversationStore):
    """Mixed into PostgresStore, which owns the pool (`pool`) and the messages."""

    if TYPE_CHECKING:  # provided by the PostgresStore this is mixed into

        @property
        def pool(self) -> Any: ...

        async def list_messages(self, session_id: str, *, limit: int | None = None) -> list[Message]: ...

    async def list_conversations(
        self, owner: str, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[Conversation]:
        after, key = before if before is not None else (None, None)
        rows = await self.pool.fetch(
            _CONVERSATION
            + " WHERE s.owner = $1 AND ($2::float8 IS NULL OR (s.updated_at, s.key) < ($2, $3)) "
            "ORDER BY s.updated_at DESC, s.key DESC LIMIT $4",
            owner,
            after,
            key,
            limit,
        )
        return [conversation_from_row(r) for r in rows]

    async def get_conversation(self, key: str) -> Conversation | None:
        row = await self.pool.fetchrow(_CONVERSATION + " WHERE s.key = $1", key)
        return None if row is None else conversation_from_row(row)

    async def create_conversation(self, key: str, title: str = "") -> Conversation:
        now = time.time()
        await self.pool.execute(
            "INSERT INTO sessions (key, owner, title, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) "
            "ON CONFLICT (key) DO NOTHING",
            key,
            key.partition("/")[0],
            title,
            now,
        )
        made = await self.get_conversation(key)
        assert made is not None
        return made

    async def rename_conversation(self, key: str, title: str) -> Conversation:
        status = await self.pool.execute("UPDATE sessions SET title = $1 WHERE key = $2", title, key)
        if status == "UPDATE 0":
            raise NotFound("no such conversation", field="sessionId")
        renamed = await self.get_conversation(key)
        assert renamed is not None
        return renamed

    async def set_first_title(self, key: str, title: str, *, replacing: str = "") -> bool:
        status = await self.pool.execute(
            "UPDATE sessions SET title = $1 WHERE key = $2 AND title = $3", title, key, replacing
        )
        return bool(status != "UPDATE 0")

    async def delete_conversation(self, key: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM messages WHERE session_id = $1", key)
            status = await conn.execute("DELETE FROM sessions WHERE key = $1", key)
        return bool(status != "DELETE 0")

    async def conversation_count(self, owner: str) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM sessions WHERE owner = $1", owner))

    async def search(
        self, owner: str, terms: tuple[Term, ...], *, limit: int, key: str | None = None
    ) -> list[SearchHit]:
        query, texts = tsquery_sql(terms, first=6)
        # the owner's lexeme (migration 8) in the query: the GIN index yields only their matches
        mine = f"'owner {hashlib.md5(owner.encode()).hexdigest()}'"
        scope = "m.session_id = $5" if key is not None else "$5::text IS NULL"
        # The newest RANK_WINDOW matches are ranked, and headlines made for the page only:
        # ts_headline re-parses the whole message. An empty query (only stop characters) matches
        # nothing, as it does without the owner's lexeme.
        rows = await self.pool.fetch(
            f"WITH q AS (SELECT {query} AS q), recent AS ("
            "  SELECT m.id FROM q, messages m"
            f"  WHERE numnode(q.q) > 0 AND m.search @@ (q.q && $4::tsquery) AND {scope}"
            f"  AND m.status <> 'replaced' ORDER BY m.id DESC LIMIT {RANK_WINDOW}), ranked AS ("
            "  SELECT m.id, m.session_id, m.role, m.created_at, m.content, s.title, ts_rank(m.search, q.q) AS rank"
            "  FROM q, recent w JOIN messages m ON m.id = w.id JOIN sessions s ON s.key = m.session_id"
            "  ORDER BY rank DESC, m.id DESC LIMIT $1) "
            "SELECT r.id, r.session_id, r.role, r.created_at, r.title, r.content, "
            "  ts_headline('parley_search', r.content, q.q, $2), strpos(r.content, $3) "
            "FROM ranked r, q ORDER BY r.rank DESC, r.id DESC",
            limit,
            _HEADLINE,
            MARK_OPEN,
            mine,
            key,
            *texts,
        )
        hits = []
        for r in rows:
            text, ranges = _snippet(r[6], r[5])
            if (
                r[7] or MARK_CLOSE in r[5]
            ):  # the text holds a marker itself: no highlights rather than wrong ones
                ranges = ()
            hits.append(SearchHit(r[1], r[4], int(r[0]), r[2], text, ranges, float(r[3])))
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
            rows = await self.pool.fetch(
                _CONVERSATION + " WHERE s.owner = $1 ORDER BY s.updated_at DESC, s.key DESC", owner
            )
            conversations = [conversation_from_row(r) for r in rows]
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
        # one transaction on one connection: all of it or, on any failure, none
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO sessions (key, owner, title, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)",
                sessions,
            )
            await conn.executemany(
                "INSERT INTO messages (session_id, turn_id, role, content, status, created_at, error, "
                "finish_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                messages,
            )
        made = [await self.get_conversation(k) for k in keys]
        return [c for c in made if c is not None]
