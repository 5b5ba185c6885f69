"""The storage seam: what a live session needs from lasting storage, and nothing more.

A backend (SQLite now, PostgreSQL later) implements `Store`; one contract test suite runs against
every backend.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from parley.errors import Fenced

Role = Literal["user", "assistant"]


class MessageStatus(StrEnum):
    #: an assistant reply still being written; never shown in history, never sent to the model
    PENDING = "pending"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    #: a spoken reply the user talked over: the content is what was actually played
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    #: an edited message and what followed it: kept, but no longer history, context or search
    REPLACED = "replaced"


#: statuses that are not history: never listed, counted, searched or sent to the model
HIDDEN = (MessageStatus.PENDING.value, MessageStatus.REPLACED.value)
#: `HIDDEN` as an SQL list, for `status NOT IN (...)`
HIDDEN_SQL = ", ".join(f"'{status}'" for status in HIDDEN)


@dataclass(slots=True, frozen=True)
class Message:
    id: int
    session_id: str
    turn_id: str
    role: Role
    content: str
    status: MessageStatus
    created_at: float
    error: str | None = None
    #: why the model stopped writing a complete reply, in its vendor's words: "length" means
    #: PARLEY_MAX_TOKENS cut it off, "stop" a natural end; None when not said (or not a reply)
    finish_reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The history entry shape: the seed's {role, content} plus Parley's fields."""
        return {
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "status": self.status.value,
            "created_at": _iso(self.created_at),
            "turnId": self.turn_id,
            **({"error": self.error} if self.error else {}),
            **({"finishReason": self.finish_reason} if self.finish_reason else {}),
        }


#: the columns `message_from_row` reads, in its order
MESSAGE_COLUMNS = "id, session_id, turn_id, role, content, status, created_at, error, finish_reason"


def message_from_row(row: Any) -> Message:
    """A message from a row of MESSAGE_COLUMNS (any backend's row type)."""
    return Message(
        id=int(row[0]),
        session_id=str(row[1]),
        turn_id=str(row[2]),
        role=row[3],
        content=str(row[4]),
        status=MessageStatus(row[5]),
        created_at=float(row[6]),
        error=None if row[7] is None else str(row[7]),
        finish_reason=None if row[8] is None else str(row[8]),
    )


def fenced(session_id: str, fence: int, current: int | None) -> Fenced:
    """The refusal of a write made with `fence` to a session whose fence is now `current`."""
    if current is None:
        return Fenced(f"session {session_id} was never taken, so no writer holds fence {fence}")
    if current > fence:
        return Fenced(f"session {session_id} is owned by a newer writer (fence {current} > {fence})")
    return Fenced(f"session {session_id} has fence {current}, not {fence}: no take handed that out")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class Store(ABC):
    """Lasting storage of messages, keyed by session key (`<owner>/<id>`, sessions/keys.py).

    Methods are safe to call concurrently. A backend also implements `store.users.UserStore`.

    Fencing (several nodes, one writer per session): `take_session` hands the session's new owner
    the next fencing token. A write given `fence=` checks in its own transaction that the token is
    still the session's current one, else raises `Fenced` and changes nothing; so once a take has
    returned, no write with an older token lands. `fence=None` checks nothing (one node).
    """

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date (migrations are versioned and idempotent)."""

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def add_message(
        self,
        session_id: str,
        turn_id: str,
        role: Role,
        content: str,
        status: MessageStatus = MessageStatus.COMPLETE,
        *,
        fence: int | None = None,
    ) -> Message: ...

    @abstractmethod
    async def begin_turn(
        self,
        session_id: str,
        turn_id: str,
        user_text: str,
        *,
        replace_from: int | None = None,
        fence: int | None = None,
    ) -> tuple[Message, Message]:
        """Store a turn's user message and its `pending` reply in one transaction: both or neither.

        `replace_from` (an edit, or a regenerated reply): that message of the session and every
        later one become `replaced` in the same transaction.

        Returns (user message, pending reply), the user's id the lower. A session calls it beside
        the model call, not before it, and releases the turn's events once it returns.
        """

    @abstractmethod
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
        """Set the final content, status and finish reason of a (pending) message.

        `fence` is checked against the message's session. KeyError if there is no such message.
        """

    @abstractmethod
    async def save_partial(self, message_id: int, content: str, *, fence: int | None = None) -> None:
        """Store the text so far of a reply still pending; a no-op once it is finished (or gone).

        So a crash mid-reply leaves what users already saw, and `fail_pending` keeps it. `fence` is
        checked against the message's session: a fenced save raises `Fenced`.
        """

    @abstractmethod
    async def list_messages(self, session_id: str, *, limit: int | None = None) -> list[Message]:
        """The session's finished messages, oldest first; `limit` keeps only the newest ones."""

    @abstractmethod
    async def clear_session(self, session_id: str, *, fence: int | None = None) -> int:
        """Delete every message of a session; returns how many went. Its fence stays."""

    @abstractmethod
    async def session_count(self, owner: str) -> int:
        """How many sessions of `owner` (keys `<owner>/<id>`) have stored messages."""

    @abstractmethod
    async def session_exists(self, session_id: str) -> bool:
        """Whether the session has any stored message."""

    #: the process that writes through this store (PARLEY_NODE_ID): a pending reply is its writer's
    node: str = "local"

    @abstractmethod
    async def fail_pending(self, reason: str) -> int:
        """Mark the replies this node left pending (a crash) as failed; run once at its start-up.

        Only this node's (and those of a release that kept no node): another node's pending reply
        may be streaming right now.
        """

    @abstractmethod
    async def take_session(self, session_id: str) -> int:
        """Make the caller the session's newest owner: its fence goes up by one and is returned.

        1 on the first take. Fences live apart from messages and conversations (a take creates
        no conversation) and are never deleted, so a token is never handed out twice.
        """

    @abstractmethod
    async def fail_pending_session(self, session_id: str, reason: str, *, fence: int) -> list[Message]:
        """Fail every `pending` reply of the session, whichever node wrote it, under `fence`.

        For a node that has just taken the session from a dead one: each keeps the text it had and
        gets `reason` as its error. Returns them as `finish_message` would, oldest first.
        """

    @abstractmethod
    async def pending_sessions(self, limit: int = 100) -> list[str]:
        """Sessions with a reply still `pending`, on any node (a cluster node checks each one's
        owner is alive, and takes over those whose owner died)."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the store cannot answer (health checks)."""
