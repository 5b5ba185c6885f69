"""PARLEY_AUTH=token: users and API tokens kept by Parley (`parley users add`, `parley tokens create`).

Clients send `Authorization: Bearer <token>`; the web app exchanges a token once for a session
cookie (web/signin.py), which this authenticator also accepts. Either is looked up by its SHA-256
digest: what the store holds cannot be replayed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.requests import HTTPConnection

from parley.auth import credentials
from parley.auth.base import Authenticator
from parley.auth.cache import UserCache
from parley.errors import Unauthenticated
from parley.store.users import CredentialKind, User, UserStore

#: the web app's session cookie (HttpOnly, SameSite=Strict; web/signin.py sets it)
COOKIE = "parley_session"

NOT_VALID = "the token is not valid (unknown, revoked or expired, or its user is disabled)"


def bearer(connection: HTTPConnection) -> str | None:
    """The bearer token of the request, None without an Authorization header; 401 if malformed."""
    values = connection.headers.getlist("authorization")
    if not values:
        return None
    if len(values) > 1:
        raise Unauthenticated("send one Authorization header, not several", field="Authorization")
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("Authorization must be `Bearer <token>`", field="Authorization")
    if len(token) > credentials.MAX_LENGTH:
        raise Unauthenticated(NOT_VALID, field="Authorization")
    return token


class TokenAuth(Authenticator):
    mode = "token"

    def __init__(
        self, users: UserStore, *, clock: Callable[[], float] = time.time, cache: UserCache | None = None
    ) -> None:
        self.users = users
        self.clock = clock
        self.cache = cache if cache is not None else UserCache(0, clock=clock)

    async def authenticate(self, connection: HTTPConnection) -> User:
        token = bearer(connection)
        if token is not None:
            return await self.token_user(token, CredentialKind.API)
        cookie = connection.cookies.get(COOKIE)
        if cookie:
            return await self.token_user(cookie, CredentialKind.COOKIE)
        raise Unauthenticated("sign in: send `Authorization: Bearer <token>` (parley tokens create)")

    async def token_user(self, token: str, kind: CredentialKind) -> User:
        if len(token) > credentials.MAX_LENGTH:
            raise Unauthenticated(NOT_VALID)
        digest = credentials.digest(token)
        key = f"{kind.value}:{digest}"
        user = self.cache.get(key)
        if user is not None:
            return user
        user = await self.users.credential_user(digest, kind, now=self.clock())
        if user is None:
            if kind is CredentialKind.COOKIE:
                raise Unauthenticated("the sign-in has ended (signed out or expired); sign in again")
            raise Unauthenticated(NOT_VALID, field="Authorization")
        self.cache.put(key, user)
        return user

    async def sign_out(self, token: str) -> None:
        """End a sign-in cookie: its credential is dropped and this process forgets it at once."""
        digest = credentials.digest(token)
        self.cache.forget(f"{CredentialKind.COOKIE.value}:{digest}")
        await self.users.drop_credential(digest)


async def issue(
    users: UserStore, user: User, kind: CredentialKind, *, expires_at: float | None = None
) -> str:
    """Mint a credential for `user`, store its digest, and return the secret (shown once)."""
    token = credentials.mint()
    await users.add_credential(
        user.id, credentials.digest(token), credentials.shown_prefix(token), kind, expires_at=expires_at
    )
    return token
