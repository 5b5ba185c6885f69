"""DeviceStore on SQLite: the devices table (its migration is in store/sqlite.py's MIGRATIONS)."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

import aiosqlite

from parley.errors import InvalidInput, NotFound
from parley.store.devices import DEVICE_COLUMNS, Device, DeviceStore, device_from_row
from parley.store.users import User

#: the devices table (appended to MIGRATIONS by store/sqlite.py)
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
        created_at   REAL    NOT NULL,
        bound_at     REAL,
        PRIMARY KEY (device_id, client_id)
    );
    CREATE INDEX devices_by_user ON devices (user_id);
"""


class SQLiteDevices(DeviceStore):
    """Mixed into SQLiteStore, which owns the connection (`db`)."""

    if TYPE_CHECKING:  # provided by the SQLiteStore this is mixed into

        @property
        def db(self) -> aiosqlite.Connection: ...

    async def device(self, device_id: str, client_id: str) -> Device | None:
        async with self.db.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ? AND client_id = ?",
            (device_id, client_id),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else device_from_row(row)

    async def add_device(
        self, device_id: str, client_id: str, *, code: str | None, user_id: str | None, firmware: str | None
    ) -> Device:
        now = time.time()
        bound_at = now if user_id is not None else None
        try:
            await self.db.execute(
                # an upsert on the device's own key, not INSERT OR REPLACE: that would resolve a
                # clash on `code` by deleting the other device holding the code
                "INSERT INTO devices (device_id, client_id, name, user_id, code, firmware, "
                "created_at, bound_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device_id, client_id) DO UPDATE SET name = excluded.name, "
                "user_id = excluded.user_id, code = excluded.code, firmware = excluded.firmware, "
                "created_at = excluded.created_at, bound_at = excluded.bound_at, "
                "token_digest = NULL, token_prefix = NULL",
                (device_id, client_id, device_id, user_id, code, firmware, now, bound_at),
            )
        except sqlite3.IntegrityError:
            await self.db.rollback()
            raise InvalidInput("that activation code is taken; ask again", field="code") from None
        await self.db.commit()
        return Device(device_id, client_id, device_id, user_id, code, now, bound_at, None, firmware)

    async def bind_device(self, code: str, user_id: str) -> Device:
        async with self.db.execute(
            "SELECT device_id, client_id FROM devices WHERE code = ? AND user_id IS NULL", (code,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no device waits for the activation code {code!r}", field="code")
        await self.db.execute(
            "UPDATE devices SET user_id = ?, code = NULL, bound_at = ? WHERE device_id = ? AND client_id = ?",
            (user_id, time.time(), row[0], row[1]),
        )
        await self.db.commit()
        found = await self.device(str(row[0]), str(row[1]))
        assert found is not None
        return found

    async def set_device_token(
        self, device: Device, digest: str, prefix: str, *, firmware: str | None
    ) -> None:
        await self.db.execute(
            "UPDATE devices SET token_digest = ?, token_prefix = ?, firmware = coalesce(?, firmware) "
            "WHERE device_id = ? AND client_id = ?",
            (digest, prefix, firmware, device.device_id, device.client_id),
        )
        await self.db.commit()

    async def token_device(self, digest: str) -> Device | None:
        async with self.db.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE token_digest = ? AND user_id IS NOT NULL", (digest,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else device_from_row(row)

    async def device_owner(self, user_id: str) -> User | None:
        async with self.db.execute(
            "SELECT id, name, admin, disabled FROM users WHERE id = ?", (user_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return User(id=str(row[0]), name=str(row[1]), admin=bool(row[2]), disabled=bool(row[3]))

    async def list_devices(self, user_id: str | None = None) -> list[Device]:
        sql, params = f"SELECT {DEVICE_COLUMNS} FROM devices", tuple[str, ...]()
        if user_id is not None:
            sql, params = sql + " WHERE user_id = ?", (user_id,)
        async with self.db.execute(sql + " ORDER BY created_at", params) as cur:
            return [device_from_row(r) for r in await cur.fetchall()]

    async def rename_device(self, device_id: str, name: str) -> Device:
        if not name.strip() or len(name) > 64:
            raise InvalidInput("a device name is 1-64 characters", field="name", limit=64)
        cur = await self.db.execute("UPDATE devices SET name = ? WHERE device_id = ?", (name, device_id))
        await self.db.commit()
        if cur.rowcount == 0:
            raise NotFound(f"no device {device_id!r}", field="device")
        async with self.db.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ?", (device_id,)
        ) as rows:
            row = await rows.fetchone()
        assert row is not None
        return device_from_row(row)

    async def remove_device(self, device_id: str) -> None:
        cur = await self.db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
        await self.db.commit()
        if cur.rowcount == 0:
            raise NotFound(f"no device {device_id!r}", field="device")
