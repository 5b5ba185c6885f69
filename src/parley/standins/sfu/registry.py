"""SFU: every session of the stand-in, and the lookup that lets one session pull another's track."""

from __future__ import annotations

import asyncio
import logging
import secrets

from parley.standins.sfu.errors import SFUError, TrackRefused, session_closed
from parley.standins.sfu.relay import PublishedTrack
from parley.standins.sfu.sessions import Session, SessionState

log = logging.getLogger("parley.standins.sfu")

#: closed sessions remembered (they answer 410); older ones are forgotten (then 404)
KEEP_CLOSED = 256


class SFU:
    """Owns every session; `aclose()` (the app's lifespan) closes each peer connection."""

    def __init__(self, *, connect_timeout: float = 5.0) -> None:
        self.connect_timeout = connect_timeout
        self._sessions: dict[str, Session] = {}

    def new_session(self) -> Session:
        self._forget_old_closed()
        session = Session(
            secrets.token_hex(16), lookup=self.published_track, connect_timeout=self.connect_timeout
        )
        self._sessions[session.id] = session
        log.info("session %s opened", session.id)
        return session

    def find(self, session_id: str) -> Session:
        """The session, open or closed; 404 if unknown."""
        session = self._sessions.get(session_id)
        if session is None:
            raise SFUError(404, "not_found", f"no session {session_id!r}")
        return session

    def get(self, session_id: str) -> Session:
        """An open session: 404 if unknown, 410 if closed."""
        session = self.find(session_id)
        if session.state is SessionState.CLOSED:
            raise session_closed(session_id)
        return session

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def published_track(self, session_id: str, name: str) -> PublishedTrack:
        session = self._sessions.get(session_id)
        if session is None or session.state is SessionState.CLOSED:
            raise TrackRefused("not_found_track_error", f"no open session {session_id!r}")
        track = session.published.get(name)
        if track is None or track.ended:
            raise TrackRefused("not_found_track_error", f"session {session_id!r} publishes no track {name!r}")
        if not track.has_media:
            # the real SFU only knows a track once media arrived; clients wait for bytesSent > 0
            raise TrackRefused("empty_track_error", f"track {name!r} has not received any media yet")
        return track

    def _forget_old_closed(self) -> None:
        closed = [s for s in self._sessions.values() if s.finished]
        closed.sort(key=lambda s: s.closed_at or 0.0)
        for session in closed[: max(0, len(closed) - KEEP_CLOSED)]:
            del self._sessions[session.id]

    async def aclose(self) -> None:
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.aclose("shutdown") for s in sessions))
        await asyncio.gather(*(s.wait_closed() for s in sessions))
