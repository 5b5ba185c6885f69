"""What a route knows of its user: who it is, its sessions, what it may still spend.

The Authenticate middleware (web/auth.py) put the user on the request; nothing here reads a
credential.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from parley.errors import Busy, InvalidInput, QuotaExceeded, Unauthenticated
from parley.services import Services
from parley.sessions.keys import SessionKey, owner_of, session_key
from parley.sessions.registry import check_session_id
from parley.sessions.session import ChatSession
from parley.store.users import User


def current_user(connection: HTTPConnection) -> User:
    """The user the middleware authenticated (routes behind it only)."""
    user: User | None = getattr(connection.state, "user", None)
    if user is None:
        raise Unauthenticated("this endpoint needs an authenticated user")
    return user


def owned_session(connection: HTTPConnection, value: object, field: str = "sessionId") -> SessionKey:
    """Check a client's session id and scope it to the requesting user: alice's `s1` is not bob's."""
    session_id = check_session_id(value, field)
    # the access-log line names the id the client used
    connection.state.session_id = session_id
    return session_key(current_user(connection).id, session_id)


async def edited_message(connection: HTTPConnection, key: SessionKey, value: object) -> int | None:
    """The user message an edit (or a regenerate) replaces, checked: None when `value` is None;
    400 naming `editOf` unless it is a user message in this conversation's history."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput("editOf must be the id (a positive integer) of a message of yours", field="editOf")
    services: Services = connection.app.state.services
    history = await services.store.list_messages(key)
    if not any(m.id == value and m.role == "user" for m in history):
        raise InvalidInput(
            f"editOf {value} names no message you sent in this conversation's history", field="editOf"
        )
    return value


async def spend(connection: HTTPConnection, what: str) -> User:
    """Count one `what` (chat, transcribe, speak, calls, ice) against the user's rate, and refuse a
    turn or call whose daily quota is spent (429, Retry-After). Returns the user."""
    user = current_user(connection)
    await spend_as(connection.app.state.services, user, what)
    return user


async def spend_as(services: Services, user: User, what: str) -> None:
    """`spend` for a user known without a request (a device on MQTT)."""
    if services.user_limits is not None:
        await services.user_limits.check_quota(user, what)
        await services.user_limits.hit(user, what)


async def live_session(connection: HTTPConnection, key: SessionKey) -> ChatSession:
    """The live session of `key`, making it live if it is not: bounded per process
    (PARLEY_MAX_LIVE_SESSIONS) and, for a conversation not stored yet, per user
    (PARLEY_MAX_SESSIONS_PER_USER)."""
    return await live_session_of(connection.app.state.services, key)


async def live_session_of(services: Services, key: SessionKey) -> ChatSession:
    """`live_session` without a request."""
    if key in services.sessions:
        return services.sessions.get(key)
    settings = services.settings
    if len(services.sessions) >= settings.max_live_sessions:
        raise Busy(
            f"this server holds its maximum of {settings.max_live_sessions} live sessions; try again shortly",
            field="sessionId",
            limit=settings.max_live_sessions,
        )
    store = services.store
    if await store.session_exists(key):
        return services.sessions.get(key)
    limit = settings.max_sessions_per_user
    if await store.session_count(owner_of(key)) >= limit:
        raise QuotaExceeded(
            f"this user has {limit} conversations, the most allowed (PARLEY_MAX_SESSIONS_PER_USER); "
            "delete one (DELETE /api/sessions/{id}) to start another",
            field="sessionId",
            limit=limit,
        )
    session = services.sessions.get(key)
    session.starts_empty()
    return session
