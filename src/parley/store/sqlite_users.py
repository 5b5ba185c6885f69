"""UserStore on SQLite: the users, credentials and usage tables (migration 3 of store/sqlite.py)."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING

import aiosqlite

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

# aiosqlite logs every statement with its parameters at DEBUG: credential digests and message text
# must never reach a log line, whatever PARLEY_LOG_LEVEL says.
logging.getLogger("aiosqlite").setLevel(logging.INFO)


class SQLiteUsers(UserStore):
    """Mixed into SQLiteStore, which owns the connection (`db`)."""

    if TYPE_CHECKING:  # provided by the SQLiteStore this is mixed into

        @property
        def db(self) -> aiosqlite.Connection: ...

    async def add_user(self, name: str, *, admin: bool = False) -> User:
        check_user_name(name)
        user = User(id=new_user_id(), name=name, admin=admin)
        try:
            await self.db.execute(
                "INSERT INTO users (id, name, admin, disabled, created_at) VALUES (?, ?, ?, 0, ?)",
                (user.id, name, int(admin), time.time()),
            )
        except sqlite3.IntegrityError:
            await self.db.rollback()
            raise InvalidInput(f"a user named {name!r} already exists", field="name") from None
        await self.db.commit()
        return user

    async def user_named(self, name: str) -> User | None:
        async with self.db.execute(f"SELECT {USER_COLUMNS} FROM users WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        return None if row is None else user_from_row(row)

    async def list_users(self) -> list[User]:
        async with self.db.execute(f"SELECT {USER_COLUMNS} FROM users ORDER BY name") as cur:
            return [user_from_row(r) for r in await cur.fetchall()]

    async def set_disabled(self, name: str, disabled: bool) -> User:
        cur = await self.db.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
        await self.db.commit()
        if cur.rowcount == 0:
            raise NotFound(f"no user named {name!r}", field="name")
        user = await self.user_named(name)
        assert user is not None
        return user

    async def identified_user(self, name: str) -> User:
        found = await self.user_named(name)
        if found is not None:
            return found
        check_user_name(name)
        # Two first requests of one new identity may race: the loser reads the winner's row.
        await self.db.execute(
            "INSERT OR IGNORE INTO users (id, name, admin, disabled, created_at) VALUES (?, ?, 0, 0, ?)",
            (new_user_id(), name, time.time()),
        )
        await self.db.commit()
        made = await self.user_named(name)
        assert made is not None
        return made

    async def add_credential(
        self, user_id: str, digest: str, prefix: str, kind: CredentialKind, *, expires_at: float | None
    ) -> None:
        await self.db.execute(
            "INSERT INTO credentials (digest, prefix, user_id, kind, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (digest, prefix, user_id, kind.value, time.time(), expires_at),
        )
        await self.db.commit()

    async def credential_user(self, digest: str, kind: CredentialKind, *, now: float) -> User | None:
        async with self.db.execute(
            "SELECT u.id, u.name, u.admin, u.disabled FROM credentials c JOIN users u ON u.id = c.user_id "
            "WHERE c.digest = ? AND c.kind = ? AND c.revoked = 0 AND u.disabled = 0 "
            "AND (c.expires_at IS NULL OR c.expires_at > ?)",
            (digest, kind.value, now),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else user_from_row(row)

    async def revoke_credentials(self, prefix: str) -> int:
        if not prefix:
            raise InvalidInput("a token prefix is needed", field="prefix")
        # the prefix is matched literally: escape LIKE's wildcards
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cur = await self.db.execute(
            "UPDATE credentials SET revoked = 1 WHERE prefix LIKE ? ESCAPE '\\' AND revoked = 0", (pattern,)
        )
        await self.db.commit()
        return cur.rowcount

    async def drop_credential(self, digest: str) -> None:
        await self.db.execute("DELETE FROM credentials WHERE digest = ?", (digest,))
        await self.db.commit()

    async def list_credentials(self, user_id: str | None = None) -> list[TokenInfo]:
        sql = (
            "SELECT c.prefix, u.name, c.kind, c.created_at, c.expires_at, c.revoked "
            "FROM credentials c JOIN users u ON u.id = c.user_id"
        )
        params: tuple[object, ...] = ()
        if user_id is not None:
            sql += " WHERE c.user_id = ?"
            params = (user_id,)
        async with self.db.execute(sql + " ORDER BY c.created_at", params) as cur:
            rows = await cur.fetchall()
        return [
            TokenInfo(
                prefix=str(r[0]),
                user=str(r[1]),
                kind=CredentialKind(r[2]),
                created_at=float(r[3]),
                expires_at=None if r[4] is None else float(r[4]),
                revoked=bool(r[5]),
            )
            for r in rows
        ]

    async def add_usage(self, user_id: str, day: str, *, tokens: int = 0, call_seconds: float = 0.0) -> None:
        await self.db.execute(
            "INSERT INTO usage (user_id, day, tokens, call_seconds) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (user_id, day) DO UPDATE SET tokens = tokens + excluded.tokens, "
            "call_seconds = call_seconds + excluded.call_seconds",
            (user_id, day, tokens, call_seconds),
        )
        await self.db.commit()

    async def usage(self, user_id: str, day: str) -> DayUsage:
        async with self.db.execute(
            "SELECT tokens, call_seconds FROM usage WHERE user_id = ? AND day = ?", (user_id, day)
        ) as cur:
            row = await cur.fetchone()
        return DayUsage() if row is None else DayUsage(int(row[0]), float(row[1]))
