"""The conversations seam: a user's list of sessions, their titles, full-text search, export/import.

A backend implements `ConversationStore` next to `Store` (SQLite's in sqlite_conversations.py). The
search query is parsed here, once, into `Term`s that each backend renders in its own syntax (FTS5
MATCH, a PostgreSQL tsquery): what users type is never passed through as query syntax.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from parley.errors import InvalidInput
from parley.store.base import Message, MessageStatus, Role

TITLE_MAX = 200
QUERY_MAX_CHARS = 256
QUERY_MAX_TERMS = 16

#: a quoted phrase (an unclosed quote runs to the end), or a run of anything else but space and quotes
_CHUNK = re.compile(r'"([^"]*)"?|([^\s"]+)')
#: a letter or digit: FTS5's unicode61 and PostgreSQL's parser both split on everything else
_WORD_CHAR = re.compile(r"[^\W_]")


@dataclass(slots=True, frozen=True)
class Conversation:
    #: the session key, `<owner>/<id>` (sessions/keys.py)
    key: str
    title: str
    created_at: float
    updated_at: float
    #: finished messages (pending replies are not history yet)
    message_count: int = 0


@dataclass(slots=True, frozen=True)
class SearchHit:
    key: str
    title: str
    message_id: int
    role: Role
    #: a short excerpt of the message around the matches (`…` where it was cut)
    snippet: str
    #: the matched words in `snippet`, as [start, end) offsets in characters (code points)
    highlights: tuple[tuple[int, int], ...]
    created_at: float


@dataclass(slots=True, frozen=True)
class Term:
    """One part of a query: a word (`prefix`: `word*`) or a quoted phrase; parts are ANDed."""

    text: str
    phrase: bool = False
    prefix: bool = False


@dataclass(slots=True, frozen=True)
class ImportedMessage:
    role: Role
    content: str
    status: MessageStatus
    created_at: float
    turn_id: str
    error: str | None = None
    finish_reason: str | None = None


@dataclass(slots=True, frozen=True)
class ImportedConversation:
    title: str
    created_at: float
    updated_at: float
    messages: list[ImportedMessage] = field(default_factory=list)


def parse_query(text: str, field: str = "q") -> tuple[Term, ...]:
    """Words in any order, "quoted phrases" and `prefix*` words; InvalidInput naming `field` else.

    Anything else users type (operators, column filters, brackets) is only text to match.
    """
    if len(text) > QUERY_MAX_CHARS:
        raise InvalidInput(
            f"{field} is longer than {QUERY_MAX_CHARS} characters", field=field, limit=QUERY_MAX_CHARS
        )
    terms: list[Term] = []
    for match in _CHUNK.finditer(text):
        phrase, word = match.group(1), match.group(2)
        if phrase is not None:
            term = Term(" ".join(phrase.split()), phrase=True)
        else:
            stem = word.rstrip("*")
            term = Term(stem, prefix=len(stem) < len(word))
        if _WORD_CHAR.search(term.text):
            terms.append(term)
    if not terms:
        raise InvalidInput(f"{field} has no word to search for", field=field)
    if len(terms) > QUERY_MAX_TERMS:
        raise InvalidInput(
            f"{field} has more than {QUERY_MAX_TERMS} words and phrases", field=field, limit=QUERY_MAX_TERMS
        )
    return tuple(terms)


def check_title(value: object, field: str = "title") -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    title = " ".join(value.split())
    if not title:
        raise InvalidInput(f"{field} is empty", field=field)
    if len(title) > TITLE_MAX:
        raise InvalidInput(f"{field} is longer than {TITLE_MAX} characters", field=field, limit=TITLE_MAX)
    return title


class ConversationStore(ABC):
    """Per-owner conversations. Every method takes the owner or a key under it: none crosses users."""

    @abstractmethod
    async def list_conversations(
        self, owner: str, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[Conversation]:
        """Newest activity first; `before` = (updated_at, key) of the last one of the previous page."""

    @abstractmethod
    async def get_conversation(self, key: str) -> Conversation | None: ...

    @abstractmethod
    async def create_conversation(self, key: str, title: str = "") -> Conversation:
        """A new empty conversation (one with stored messages gets its row on the first write)."""

    @abstractmethod
    async def rename_conversation(self, key: str, title: str) -> Conversation:
        """Set the title; NotFound (field sessionId) when there is no such conversation."""

    @abstractmethod
    async def set_first_title(self, key: str, title: str, *, replacing: str = "") -> bool:
        """Title a conversation whose title is still `replacing` (none yet, or the automatic one
        a better one replaces); whether it did (a rename always wins)."""

    @abstractmethod
    async def delete_conversation(self, key: str) -> bool:
        """Delete the conversation and every message of it; whether it existed."""

    @abstractmethod
    async def conversation_count(self, owner: str) -> int: ...

    @abstractmethod
    async def search(
        self, owner: str, terms: tuple[Term, ...], *, limit: int, key: str | None = None
    ) -> list[SearchHit]:
        """The owner's finished messages matching every term, best first (bm25 / ts_rank)."""

    @abstractmethod
    async def export_conversations(
        self, owner: str, key: str | None = None
    ) -> list[tuple[Conversation, list[Message]]]:
        """One conversation (`key`) or all of the owner's, newest activity first, messages oldest first."""

    @abstractmethod
    async def import_conversations(
        self, owner: str, conversations: list[ImportedConversation], ids: list[str]
    ) -> list[Conversation]:
        """Store each conversation under `<owner>/<ids[i]>`: all of them or, on any failure, none."""


#: snippet() marks matches with these; private-use characters, so text almost never holds them
MARK_OPEN, MARK_CLOSE = "\ue000", "\ue001"
SNIPPET_TOKENS = 24


def marked(snippet: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """A snippet with markers -> its plain text and the marked ranges."""
    out: list[str] = []
    ranges: list[tuple[int, int]] = []
    start = 0
    length = 0
    for ch in snippet:
        if ch == MARK_OPEN:
            start = length
        elif ch == MARK_CLOSE:
            if length > start:
                ranges.append((start, length))
        else:
            out.append(ch)
            length += 1
    return "".join(out), tuple(ranges)


def conversation_from_row(row: Any) -> Conversation:
    """A conversation from a row of (key, title, created_at, updated_at, message count)."""
    return Conversation(str(row[0]), str(row[1]), float(row[2]), float(row[3]), int(row[4]))
