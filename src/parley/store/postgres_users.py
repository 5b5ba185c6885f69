"""UserStore on PostgreSQL: the users, credentials and usage tables (migration 3 of store/postgres.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]

from parley.errors import InvalidInput, NotFound
from parley.store.users import (
    USER_COLUMNS,
    CredentialKind,
    DayUsage,
    TokenInfo,
    User,
    UserStore,
    check_user_name,
    new_user_id,
    user_from_row,
)


def _count(status: str) -> int:
    """The row count of a command tag such as `UPDATE 3`."""
    return int(status.split()[-1])


class PostgresUsers(UserStore):
    """Mixed into PostgresStore, which owns the pool (`pool`)."""

    if TYPE_CHECKING:  # provided by the PostgresStore this is mixed into

        @property
        def pool(self) -> Any: ...

    async def add_user(self, name: str, *, admin: bool = False) -> User:
        check_user_name(name)
        user = User(id=new_user_id(), name=name, admin=admin)
        try:
            await self.pool.execute(
                "INSERT INTO users (id, name, admin, disabled, created_at) VALUES ($1, $2, $3, FALSE, $4)",
                user.id,
                name,
                admin,
                time.time(),
            )
        except asyncpg.UniqueViolationError:
            raise InvalidInput(f"a user named {name!r} already exists", field="name") from None
        return user

    async def user_named(self, name: str) -> User | None:
        row = await self.pool.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE name = $1", name)
        return None if row is None else user_from_row(row)

    async def list_users(self) -> list[User]:
        return [
            user_from_row(r) for r in await self.pool.fetch(f"SELECT {USER_COLUMNS} FROM users ORDER BY name")
        ]

    async def set_disabled(self, name: str, disabled: bool) -> User:
        row = await self.pool.fetchrow(
            f"UPDATE users SET disabled = $1 WHERE name = $2 RETURNING {USER_COLUMNS}", disabled, name
        )
        if row is None:
            raise NotFound(f"no user named {name!r}", field="name")
        return user_from_row(row)

    async def identified_user(self, name: str) -> User:
        found = await self.user_named(name)
        if found is not None:
            return found
        check_user_name(name)
        # Two first requests of one new identity may race (on two nodes): the loser reads the winner's row.
        await self.pool.execute(
            "INSERT INTO users (id, name, admin, disabled, created_at) VALUES ($1, $2, FALSE, FALSE, $3) "
            "ON CONFLICT (name) DO NOTHING",
            new_user_id(),
            name,
            time.time(),
        )
        made = await self.user_named(name)
        assert made is not None
        return made

    async def add_credential(
        self, user_id: str, digest: str, prefix: str, kind: CredentialKind, *, expires_at: float | None
    ) -> None:
        await self.pool.execute(
            "INSERT INTO credentials (digest, prefix, user_id, kind, created_at, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            digest,
            prefix,
            user_id,
            kind.value,
            time.time(),
            expires_at,
        )

    async def credential_user(self, digest: str, kind: CredentialKind, *, now: float) -> User | None:
        row = await self.pool.fetchrow(
            "SELECT u.id, u.name, u.admin, u.disabled FROM credentials c JOIN users u ON u.id = c.user_id "
            "WHERE c.digest = $1 AND c.kind = $2 AND NOT c.revoked AND NOT u.disabled "
            "AND (c.expires_at IS NULL OR c.expires_at > $3)",
            digest,
            kind.value,
            now,
        )
        return None if row is None else user_from_row(row)

    async def revoke_credentials(self, prefix: str) -> int:
        if not prefix:
            raise InvalidInput("a token prefix is needed", field="prefix")
        # the prefix is matched literally: escape LIKE's wildcards
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        status = await self.pool.execute(
            "UPDATE credentials SET revoked = TRUE WHERE prefix LIKE $1 ESCAPE '\\' AND NOT revoked", pattern
        )
        return _count(status)

    async def drop_credential(self, digest: str) -> None:
        await self.pool.execute("DELETE FROM credentials WHERE digest = $1", digest)

    async def list_credentials(self, user_id: str | None = None) -> list[TokenInfo]:
        rows = await self.pool.fetch(
            "SELECT c.prefix, u.name, c.kind, c.created_at, c.expires_at, c.revoked "
            "FROM credentials c JOIN users u ON u.id = c.user_id "
            "WHERE $1::text IS NULL OR c.user_id = $1 ORDER BY c.created_at",
            user_id,
        )
        return [
            TokenInfo(
                prefix=r[0],
                user=r[1],
                kind=CredentialKind(r[2]),
                created_at=float(r[3]),
                expires_at=None if r[4] is None else float(r[4]),
                revoked=r[5],
            )
            for r in rows
        ]

    async def add_usage(self, user_id: str, day: str, *, tokens: int = 0, call_seconds: float = 0.0) -> None:
        await self.pool.execute(
            "INSERT INTO usage (user_id, day, tokens, call_seconds) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (user_id, day) DO UPDATE SET tokens = usage.tokens + excluded.tokens, "
            "call_seconds = usage.call_seconds + excluded.call_seconds",
            user_id,
            day,
            tokens,
            call_seconds,
        )

    async def usage(self, user_id: str, day: str) -> DayUsage:
        row = await self.pool.fetchrow(
            "SELECT tokens, call_seconds FROM usage WHERE user_id = $1 AND day = $2", user_id, day
        )
        return DayUsage() if row is None else DayUsage(int(row[0]), float(row[1]))
