"""DeviceStore on PostgreSQL: the devices table (migration 5 of store/postgres.py), as on SQLite."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]

from parley.errors import InvalidInput, NotFound
from parley.store.devices import DEVICE_COLUMNS, Device, DeviceStore, device_from_row
from parley.store.users import User

MIGRATION = """
    CREATE TABLE devices (
        device_id    TEXT    NOT NULL,
        client_id    TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        user_id      TEXT,
        code         TEXT    UNIQUE,
        token_digest TEXT    UNIQUE,
        token_prefix TEXT,
        firmware     TEXT,
        created_at   DOUBLE PRECISION NOT NULL,
        bound_at     DOUBLE PRECISION,
        PRIMARY KEY (device_id, client_id)
    );
    CREATE INDEX devices_by_user ON devices (user_id);
"""


class PostgresDevices(DeviceStore):
    """Mixed into PostgresStore, which owns the pool (`pool`)."""

    if TYPE_CHECKING:  # provided by the PostgresStore this is mixed into

        @property
        def pool(self) -> Any: ...

    async def device(self, device_id: str, client_id: str) -> Device | None:
        row = await self.pool.fetchrow(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1 AND client_id = $2",
            device_id,
            client_id,
        )
        return None if row is None else device_from_row(row)

    async def add_device(
        self, device_id: str, client_id: str, *, code: str | None, user_id: str | None, firmware: str | None
    ) -> Device:
        now = time.time()
        bound_at = now if user_id is not None else None
        try:
            # a new record of the same MAC and Client-Id replaces the old one, token and all
            await self.pool.execute(
                "INSERT INTO devices (device_id, client_id, name, user_id, code, firmware, created_at, bound_at) "
                "VALUES ($1, $2, $1, $3, $4, $5, $6, $7) ON CONFLICT (device_id, client_id) DO UPDATE SET "
                "name = excluded.name, user_id = excluded.user_id, code = excluded.code, "
                "firmware = excluded.firmware, created_at = excluded.created_at, bound_at = excluded.bound_at, "
                "token_digest = NULL, token_prefix = NULL",
                device_id,
                client_id,
                user_id,
                code,
                firmware,
                now,
                bound_at,
            )
        except asyncpg.UniqueViolationError:
            raise InvalidInput("that activation code is taken; ask again", field="code") from None
        return Device(device_id, client_id, device_id, user_id, code, now, bound_at, None, firmware)

    async def bind_device(self, code: str, user_id: str) -> Device:
        row = await self.pool.fetchrow(
            "UPDATE devices SET user_id = $1, code = NULL, bound_at = $2 "
            f"WHERE code = $3 AND user_id IS NULL RETURNING {DEVICE_COLUMNS}",
            user_id,
            time.time(),
            code,
        )
        if row is None:
            raise NotFound(f"no device waits for the activation code {code!r}", field="code")
        return device_from_row(row)

    async def set_device_token(
        self, device: Device, digest: str, prefix: str, *, firmware: str | None
    ) -> None:
        await self.pool.execute(
            "UPDATE devices SET token_digest = $1, token_prefix = $2, firmware = coalesce($3, firmware) "
            "WHERE device_id = $4 AND client_id = $5",
            digest,
            prefix,
            firmware,
            device.device_id,
            device.client_id,
        )

    async def token_device(self, digest: str) -> Device | None:
        row = await self.pool.fetchrow(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE token_digest = $1 AND user_id IS NOT NULL", digest
        )
        return None if row is None else device_from_row(row)

    async def device_owner(self, user_id: str) -> User | None:
        row = await self.pool.fetchrow("SELECT id, name, admin, disabled FROM users WHERE id = $1", user_id)
        return None if row is None else User(id=row[0], name=row[1], admin=row[2], disabled=row[3])

    async def list_devices(self, user_id: str | None = None) -> list[Device]:
        rows = await self.pool.fetch(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE $1::text IS NULL OR user_id = $1 ORDER BY created_at",
            user_id,
        )
        return [device_from_row(r) for r in rows]

    async def rename_device(self, device_id: str, name: str) -> Device:
        if not name.strip() or len(name) > 64:
            raise InvalidInput("a device name is 1-64 characters", field="name", limit=64)
        rows = await self.pool.fetch(
            f"UPDATE devices SET name = $1 WHERE device_id = $2 RETURNING {DEVICE_COLUMNS}", name, device_id
        )
        if not rows:
            raise NotFound(f"no device {device_id!r}", field="device")
        return device_from_row(rows[0])

    async def remove_device(self, device_id: str) -> None:
        status = await self.pool.execute("DELETE FROM devices WHERE device_id = $1", device_id)
        if status == "DELETE 0":
            raise NotFound(f"no device {device_id!r}", field="device")
