"""SessionRegistry: one live ChatSession per session id, made on first use, released when idle.

A released session keeps nothing that storage does not also have, so the next use reloads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable

from parley.bus.base import Bus, Guard
from parley.errors import InvalidInput
from parley.providers.llm import ChatProvider, Usage
from parley.sessions.session import ChatSession, SessionConfig
from parley.sessions.tools import Toolbox
from parley.store.base import Store

log = logging.getLogger("parley.sessions")

SESSION_ID_MAX = 128
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def check_session_id(value: object, field: str = "sessionId") -> str:
    """A session id is 1-128 characters of letters, digits and `_ . : -`, starting alphanumeric."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"Missing {field}", field=field)
    if len(value) > SESSION_ID_MAX:
        raise InvalidInput(
            f"{field} is longer than {SESSION_ID_MAX} characters", field=field, limit=SESSION_ID_MAX
        )
    if not SESSION_ID_RE.match(value):
        raise InvalidInput(
            f"{field} may hold only letters, digits and _ . : - and must start with a letter or digit",
            field=field,
            limit=SESSION_ID_RE.pattern,
        )
    return value


class SessionRegistry:
    def __init__(
        self,
        *,
        store: Store,
        chat: ChatProvider,
        bus: Bus,
        config: SessionConfig,
        idle_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_usage: Callable[[str, Usage], Awaitable[None]] | None = None,
        on_turn: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._on_usage = on_usage
        self._on_turn = on_turn
        self._chat = chat
        self._bus = bus
        self._config = config
        self._idle_seconds = idle_seconds
        self._clock = clock
        # the sessions' timers (storing a reply's text so far) wait on this, paired with `clock`
        self._sleep = sleep
        self._sessions: dict[str, ChatSession] = {}
        self._reaper: asyncio.Task[None] | None = None
        #: the fencing token a new live session writes with (sessions/cluster.py sets it: a node's
        #: own sessions get their lease's token, any other 0, which the store always refuses)
        self.fence_of: Callable[[str], int | None] = lambda key: None
        #: the bus guard of a live session's events (sessions/cluster.py: its lease, while owned)
        self.guard_of: Callable[[str], Guard | None] = lambda key: None
        #: tools lent to sessions by key for a while (a connected device's MCP tools)
        self._toolboxes: dict[str, Toolbox] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def get(self, key: str) -> ChatSession:
        """The live session of a session key (`<owner>/<id>`, sessions/keys.py), made on first use."""
        session = self._sessions.get(key)
        if session is None:
            session = ChatSession(
                key,
                store=self._store,
                chat=self._chat,
                bus=self._bus,
                config=self._config,
                clock=self._clock,
                sleep=self._sleep,
                on_usage=self._on_usage,
                on_turn=self._on_turn,
                fence_of=lambda key: self.fence_of(key),
                toolbox_of=self._toolboxes.get,
                guard_of=lambda key: self.guard_of(key),
            )
            self._sessions[key] = session
        session.last_active = self._clock()
        return session

    def lend_tools(self, key: str, toolbox: Toolbox) -> None:
        """From now on the turns of `key` offer these tools (replacing any lent before)."""
        self._toolboxes[key] = toolbox

    def withdraw_tools(self, key: str, toolbox: Toolbox) -> None:
        """The tools are gone (their device disconnected); a newer lender's stay."""
        if self._toolboxes.get(key) is toolbox:
            del self._toolboxes[key]

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="session-reaper")

    async def _reap_forever(self) -> None:
        interval = max(0.05, min(30.0, self._idle_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            await self.release_idle()

    async def release_idle(self) -> int:
        """Release sessions with no sockets, no turns and no activity for `idle_seconds`."""
        now = self._clock()
        idle = [
            s
            for s in self._sessions.values()
            if not s.busy
            and self._bus.subscriber_count(s.key) == 0
            and now - s.last_active >= self._idle_seconds
        ]
        # Judged, dropped and closed with no await in between: a request running while the
        # sessions close gets a fresh session from `get`, never one of these (an await here let a
        # turn into a session that was then cancelled under it).
        for session in idle:
            del self._sessions[session.key]
            session.close()
        await asyncio.gather(*(s.aclose() for s in idle))
        if idle:
            log.debug("released %d idle sessions, %d live", len(idle), len(self._sessions))
        return len(idle)

    async def drop(self, key: str) -> None:
        """Close the live session of `key` now (another node runs it from here on)."""
        session = self._sessions.pop(key, None)
        if session is not None:
            session.close()
            await session.aclose()

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.aclose() for s in sessions), return_exceptions=True)
