"""The users seam: users, their credentials (as hashes only) and what they used today.

A backend implements `UserStore` next to `Store` (SQLite now, PostgreSQL later); one contract test
suite runs against every backend. Nothing here decides who may do what: `auth/` does.
"""

from __future__ import annotations

import re
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from parley.errors import InvalidInput

USER_NAME_MAX = 254
#: a name is a login name or an email address (Access and trusted headers name users by email)
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,253}$")


def check_user_name(value: str, field: str = "name") -> str:
    if not USER_NAME_RE.match(value):
        raise InvalidInput(
            f"{field} must be 1-{USER_NAME_MAX} letters, digits or _ . @ + -, starting with a letter or digit",
            field=field,
            limit=USER_NAME_MAX,
        )
    return value


@dataclass(slots=True, frozen=True)
class User:
    #: stable and opaque; scopes the user's session ids (never shown to other users)
    id: str
    name: str
    admin: bool = False
    disabled: bool = False


#: the columns `user_from_row` reads, in its order
USER_COLUMNS = "id, name, admin, disabled"


def user_from_row(row: Any) -> User:
    return User(id=str(row[0]), name=str(row[1]), admin=bool(row[2]), disabled=bool(row[3]))


def new_user_id() -> str:
    # opaque, never reused; "u" keeps it apart from the implicit "local" user
    return "u" + secrets.token_hex(8)


#: the one implicit user of PARLEY_AUTH=none
LOCAL_USER = User(id="local", name="local", admin=True)


class CredentialKind(StrEnum):
    #: an API token (`parley tokens create`), sent as `Authorization: Bearer`
    API = "api"
    #: a web sign-in: the value of the HttpOnly session cookie a token was exchanged for
    COOKIE = "cookie"


@dataclass(slots=True, frozen=True)
class TokenInfo:
    prefix: str
    user: str
    kind: CredentialKind
    created_at: float
    expires_at: float | None
    revoked: bool


@dataclass(slots=True, frozen=True)
class DayUsage:
    tokens: int = 0
    call_seconds: float = 0.0


class UserStore(ABC):
    """Users and credentials. Credentials are looked up by their digest; the secret is never kept."""

    @abstractmethod
    async def add_user(self, name: str, *, admin: bool = False) -> User:
        """Create a user; InvalidInput (field `name`) when the name is taken."""

    @abstractmethod
    async def user_named(self, name: str) -> User | None: ...

    @abstractmethod
    async def list_users(self) -> list[User]: ...

    @abstractmethod
    async def set_disabled(self, name: str, disabled: bool) -> User:
        """Disable (or enable) a user: their credentials stop working at once. NotFound if none."""

    @abstractmethod
    async def identified_user(self, name: str) -> User:
        """The user an external identity (an Access email, a proxy's header) names, made on first sight."""

    @abstractmethod
    async def add_credential(
        self, user_id: str, digest: str, prefix: str, kind: CredentialKind, *, expires_at: float | None
    ) -> None: ...

    @abstractmethod
    async def credential_user(self, digest: str, kind: CredentialKind, *, now: float) -> User | None:
        """The enabled user a live (unrevoked, unexpired) credential belongs to, else None."""

    @abstractmethod
    async def revoke_credentials(self, prefix: str) -> int:
        """Revoke every credential whose shown prefix starts with `prefix`; how many were live."""

    @abstractmethod
    async def drop_credential(self, digest: str) -> None:
        """Forget one credential (a sign-out)."""

    @abstractmethod
    async def list_credentials(self, user_id: str | None = None) -> list[TokenInfo]: ...

    @abstractmethod
    async def add_usage(self, user_id: str, day: str, *, tokens: int = 0, call_seconds: float = 0.0) -> None:
        """Add to a user's usage of `day` (YYYY-MM-DD, UTC)."""

    @abstractmethod
    async def usage(self, user_id: str, day: str) -> DayUsage: ...
