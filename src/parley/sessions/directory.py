"""The session directory seam: which process runs a session's turns, and how a request reaches it.

One process (`LocalDirectory`) runs every session itself. Several (`sessions/cluster.py`) agree
through Redis that one node at a time owns a session; the others hand its turns, stops and clears
to that node. Either way the web layer asks the directory, never a ChatSession it found itself, so
a session's turns run in one place, strictly in arrival order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from parley.sessions.registry import SessionRegistry
from parley.sessions.session import ChatSession
from parley.sessions.turn import Turn

#: makes the session live on this node (web/users.py `live_session`: its limits, its first turn)
MakeLive = Callable[[], Awaitable[ChatSession]]


class SessionDirectory(ABC):
    def __init__(self, registry: SessionRegistry) -> None:
        #: this node's live sessions
        self.registry = registry

    @abstractmethod
    async def submit(
        self,
        key: str,
        text: str,
        *,
        live: MakeLive,
        source: str = "http",
        language: str | None = None,
        client_id: str | None = None,
        replace_from: int | None = None,
    ) -> Turn:
        """Queue a turn where the session runs; the Turn's feed and `done` follow it from here."""

    @abstractmethod
    async def stop(self, key: str, turn_id: str | None = None) -> str | None:
        """Stop the running (or the named queued) turn wherever it runs; its id, or None."""

    @abstractmethod
    async def clear(self, key: str) -> int:
        """Stop the session's turns and delete its history, where it runs; how many messages went."""

    async def watch(self, key: str) -> None:
        """A socket of this node follows `key` (a cluster node then takes it if its owner dies)."""

    def unwatch(self, key: str) -> None:
        """That socket is gone."""

    async def own(self, key: str) -> None:
        """Run `key`'s turns on this node from now on (a voice call or a device here speaks them):
        in a cluster, take the session, asking the node that owns it to hand it over."""

    def pin(self, key: str) -> None:
        """Keep `key` on this node while something here (a call) needs it; after `own`."""

    def unpin(self, key: str) -> None:
        """That call ended."""

    def start(self) -> None:
        """Start background work (the cluster's lease renewal and inbox)."""

    async def aclose(self) -> None:
        """Give up what this node holds and stop its background work."""


class LocalDirectory(SessionDirectory):
    """One process: every session runs here."""

    async def submit(
        self,
        key: str,
        text: str,
        *,
        live: MakeLive,
        source: str = "http",
        language: str | None = None,
        client_id: str | None = None,
        replace_from: int | None = None,
    ) -> Turn:
        session = await live()
        return session.submit(
            text, source=source, language=language, client_id=client_id, replace_from=replace_from
        )

    async def stop(self, key: str, turn_id: str | None = None) -> str | None:
        # A session that is not live has no turn to stop: making one would let any stream of new
        # ids hold a live session each until it idles out.
        if key not in self.registry:
            return None
        turn = self.registry.get(key).stop(turn_id)
        return turn.id if turn is not None else None

    async def clear(self, key: str) -> int:
        return await self.registry.get(key).clear()
