"""Session keys: a user's session id, scoped to its owner.

Clients name conversations by ids they pick (`sessionId`); two users may pick the same one. Inside
the server a session is known by its key, `<owner id>/<session id>` (an id holds no `/`), which is
what the store, the bus and the registries use; events and answers carry only the client's id.
"""

from __future__ import annotations

from typing import NewType

SessionKey = NewType("SessionKey", str)


def session_key(owner: str, session_id: str) -> SessionKey:
    return SessionKey(f"{owner}/{session_id}")


def owner_of(key: str) -> str:
    return key.partition("/")[0]


def public_id(key: str) -> str:
    """The id the owner's clients use (a key without an owner is its own id)."""
    return key.rpartition("/")[2]
