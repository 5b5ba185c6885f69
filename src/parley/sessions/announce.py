"""ListAnnouncer: a conversation telling its owner's list how it stands (issue 14's live list).

Every socket of the owner, whatever conversation it is on, hears `conversations` events on the
owner's topic (`events.user_topic`): `created` when a turn made the conversation, `renamed` when
its title is not the one last told, else `updated`. Each announcement is one read of the
conversation's row, run beside the session's worker (the session is idle once its turn is done)
and after the announcement before it, so the owner hears of the conversation in order. At most
`ANNOUNCING_MAX` wait (a bus that does not answer); later ones are dropped, as a failed publish
would be. A failure costs only the event.
"""

from __future__ import annotations

import asyncio
import logging

from parley.bus.base import Bus
from parley.errors import BusUnavailable
from parley.sessions import events
from parley.sessions.keys import owner_of, public_id
from parley.store.base import Store
from parley.store.conversations import ConversationStore

log = logging.getLogger("parley.turn")

#: announcements to the owner's sockets one session may have waiting
ANNOUNCING_MAX = 16


class ListAnnouncer:
    def __init__(self, key: str, *, store: Store, bus: Bus) -> None:
        self.key = key
        self._id = public_id(key)
        self._store = store
        self._bus = bus
        #: the title last told to the owner's sockets, to tell a rename from an update
        self._told_title: str | None = None
        self._waiting: set[asyncio.Task[None]] = set()
        self._last: asyncio.Task[None] | None = None

    def soon(self, made_at: float | None = None) -> None:
        """Announce beside the caller, after the announcement before it. `made_at` (the first
        message of the turn that may have made the conversation): `created` when the row is no
        older, nothing when it was already there."""
        if len(self._waiting) >= ANNOUNCING_MAX:
            log.warning(
                "session=%s: the owner's list not told: %d announcements wait", self._id, ANNOUNCING_MAX
            )
            return
        task = asyncio.create_task(self._announce(made_at, after=self._last), name=f"announce:{self.key}")
        self._last = task
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def now(self) -> None:
        """Announce and wait for it (a clear: a delete's `deleted` must come after it)."""
        await self._announce(after=self._last)

    async def aclose(self) -> None:
        for task in tuple(self._waiting):
            task.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)

    async def _announce(
        self, made_at: float | None = None, *, after: asyncio.Task[None] | None = None
    ) -> None:
        if after is not None:
            await asyncio.wait([after])
        if not isinstance(self._store, ConversationStore):
            return
        try:
            found = await self._store.get_conversation(self.key)
            if found is None:
                return
            action: events.ConversationAction = "updated"
            if made_at is not None:
                if found.created_at < made_at:
                    self._told_title = found.title
                    return
                action = "created"
            elif self._told_title is not None and found.title != self._told_title:
                action = "renamed"
            self._told_title = found.title
            event = events.conversations(action, events.conversation_wire(found))
            await self._bus.publish(events.user_topic(owner_of(self.key)), event.data)
        except BusUnavailable as exc:
            log.warning("session=%s: the owner's list not told: %s", self._id, exc.message)
        except Exception:
            log.exception("session=%s: could not tell the owner's list", self._id)
