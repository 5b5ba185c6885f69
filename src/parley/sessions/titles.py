"""Automatic titles: after a conversation's first turn, its first words, then the model's own title.

Run by the session after a turn's reply went out (so it never delays the reply), it titles only a
conversation that has no title yet (a rename or an import always wins) with the first words of its
first message, and tells the conversation's sockets with a `title` event. With a chat model
(`PARLEY_TITLES=model`), it then asks the model for a short title in a task of its own and puts
it in place of the first words, unless the title changed meanwhile (a rename), telling the
conversation's sockets (`title`) and the owner's list (`conversations`, `renamed`). A model that
fails, or answers nothing usable, leaves the first words.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re

from parley.bus.base import Bus
from parley.errors import ParleyError
from parley.providers.llm import ChatMessage, ChatProvider, ChatRequest
from parley.sessions import events
from parley.sessions.keys import owner_of, public_id
from parley.store.conversations import ConversationStore
from parley.text import valid_text

log = logging.getLogger("parley.sessions")

TITLE_WORDS = 8
TITLE_CHARS = 60
#: sessions known to have a title, so later turns cost no write (bounded: the oldest are forgotten)
_KNOWN_MAX = 10_000
#: titles the model is writing at once (more wait for the first words to stand)
_WRITING_MAX = 32
#: the most of the first message the model reads, and the most it may write
_PROMPT_CHARS = 1000
_TITLE_TOKENS = 16
TITLE_PROMPT = (
    "Write a title for a conversation that begins with the user's message below: at most six "
    "words, in the message's language, no quotes, nothing else."
)
_LABEL = re.compile(r"^\s*(title|titre|titel|título)\s*:\s*", re.IGNORECASE)
_EDGES = "\"'`*#_“”‘’«»「」 \t."


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


def clean_title(written: str) -> str:
    """The model's answer as a title: its first line, no label, quotes or markup, at most
    `TITLE_WORDS` words; "" when nothing usable is left."""
    lines = [line for line in written.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = _LABEL.sub("", lines[0]).strip(_EDGES)
    return first_words(valid_text(line))


class Titler:
    def __init__(self, store: ConversationStore, bus: Bus, chat: ChatProvider | None = None) -> None:
        self._store = store
        self._bus = bus
        #: the model that writes titles (None: the first words are the title)
        self._chat = chat
        self._titled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._writing: set[asyncio.Task[None]] = set()

    async def on_turn(self, key: str, user_text: str) -> None:
        """The session's hook after each turn: title the conversation if this was its first."""
        if key in self._titled:
            return
        title = first_words(user_text)
        if title and await self._store.set_first_title(key, title):
            await self._bus.publish(key, events.title(public_id(key), title).data)
            if self._chat is not None and len(self._writing) < _WRITING_MAX:
                task = asyncio.create_task(self._write(key, user_text, title), name=f"title:{key}")
                self._writing.add(task)
                task.add_done_callback(self._writing.discard)
        self._titled[key] = None
        if len(self._titled) > _KNOWN_MAX:
            self._titled.popitem(last=False)

    async def _write(self, key: str, user_text: str, words: str) -> None:
        """Ask the model for a title and put it in place of `words`, unless it changed meanwhile."""
        assert self._chat is not None
        request = ChatRequest(
            [ChatMessage("system", TITLE_PROMPT), ChatMessage("user", user_text[:_PROMPT_CHARS])],
            max_tokens=_TITLE_TOKENS,
        )
        try:
            written = "".join([delta.text async for delta in self._chat.stream(request)])
        except ParleyError as exc:
            log.info("no title from the model for session=%s: %s", public_id(key), exc.message)
            return
        title = clean_title(written)
        if not title or title == words:
            return
        try:
            if not await self._store.set_first_title(key, title, replacing=words):
                return  # renamed (or deleted) while the model wrote
            await self._bus.publish(key, events.title(public_id(key), title).data)
            found = await self._store.get_conversation(key)
            if found is not None:
                listed = events.conversations("renamed", events.conversation_wire(found))
                await self._bus.publish(events.user_topic(owner_of(key)), listed.data)
        except ParleyError as exc:  # the bus or the store went away: the first words stay told
            log.warning("session=%s: the model's title not told: %s", public_id(key), exc.message)

    def forget(self, key: str) -> None:
        """The conversation was deleted: a new one under the same id gets a title again."""
        self._titled.pop(key, None)

    async def settled(self) -> None:
        """Until the titles being written now are in place (or given up)."""
        await asyncio.gather(*self._writing, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop titles still being written (shutdown)."""
        for task in list(self._writing):
            task.cancel()
        await asyncio.gather(*self._writing, return_exceptions=True)
