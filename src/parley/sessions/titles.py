"""Automatic titles: after a conversation's first turn, the first words of its first message.

Run by the session after a turn's reply went out (so it never delays the reply), it titles only a
conversation that has no title yet (a rename or an import always wins) and tells the
conversation's sockets with a `title` event.
"""

from __future__ import annotations

import collections
import logging

from parley.bus.base import Bus
from parley.sessions import events
from parley.sessions.keys import public_id
from parley.store.conversations import ConversationStore

log = logging.getLogger("parley.sessions")

TITLE_WORDS = 8
TITLE_CHARS = 60
#: sessions known to have a title, so later turns cost no write (bounded: the oldest are forgotten)
_KNOWN_MAX = 10_000


def first_words(text: str, *, words: int = TITLE_WORDS, chars: int = TITLE_CHARS) -> str:
    """At most `words` words and `chars` characters of `text`, cut at a word, with `…` when cut."""
    parts = text.split()
    title = " ".join(parts[:words])
    cut = len(parts) > words
    if len(title) > chars:
        head = title[:chars]
        title = head.rsplit(" ", 1)[0] if " " in head else head
        cut = True
    return title + "…" if cut and title else title


class Titler:
    def __init__(self, store: ConversationStore, bus: Bus) -> None:
        self._store = store
        self._bus = bus
        self._titled: collections.OrderedDict[str, None] = collections.OrderedDict()

    async def on_turn(self, key: str, user_text: str) -> None:
        """The session's hook after each turn: title the conversation if this was its first."""
        if key in self._titled:
            return
        title = first_words(user_text)
        if title and await self._store.set_first_title(key, title):
            await self._bus.publish(key, events.title(public_id(key), title).data)
        self._titled[key] = None
        if len(self._titled) > _KNOWN_MAX:
            self._titled.popitem(last=False)

    def forget(self, key: str) -> None:
        """The conversation was deleted: a new one under the same id gets a title again."""
        self._titled.pop(key, None)
