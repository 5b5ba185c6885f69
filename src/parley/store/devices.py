"""The devices seam: XiaoZhi devices, whom they belong to, and their tokens (as digests only).

A device is known by its `Device-Id` (its MAC) together with its `Client-Id` (a UUID it keeps):
a request naming the MAC with another Client-Id is another device, which must be activated again.
An unbound device holds a pending 6-digit activation code; binding it to a user clears the code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from parley.store.users import User


@dataclass(slots=True, frozen=True)
class Device:
    device_id: str
    client_id: str
    name: str
    #: the user it belongs to; None until a code binds it
    user_id: str | None
    #: the pending activation code (None once bound)
    code: str | None
    created_at: float
    bound_at: float | None = None
    #: the first characters of its current token, to tell tokens apart in listings
    token_prefix: str | None = None
    firmware: str | None = None

    @property
    def bound(self) -> bool:
        return self.user_id is not None


#: the columns `device_from_row` reads, in its order
DEVICE_COLUMNS = "device_id, client_id, name, user_id, code, created_at, bound_at, token_prefix, firmware"


def device_from_row(row: Any) -> Device:
    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return Device(
        device_id=str(row[0]),
        client_id=str(row[1]),
        name=str(row[2]),
        user_id=text(row[3]),
        code=text(row[4]),
        created_at=float(row[5]),
        bound_at=None if row[6] is None else float(row[6]),
        token_prefix=text(row[7]),
        firmware=text(row[8]),
    )


class DeviceStore(ABC):
    @abstractmethod
    async def device(self, device_id: str, client_id: str) -> Device | None: ...

    @abstractmethod
    async def add_device(
        self, device_id: str, client_id: str, *, code: str | None, user_id: str | None, firmware: str | None
    ) -> Device:
        """Record a device (replacing an earlier record of the same MAC and Client-Id)."""

    @abstractmethod
    async def bind_device(self, code: str, user_id: str) -> Device:
        """Give the device holding `code` to `user_id`; NotFound (field `code`) if no device holds it."""

    @abstractmethod
    async def set_device_token(
        self, device: Device, digest: str, prefix: str, *, firmware: str | None
    ) -> None:
        """Replace the device's token (its earlier one stops working)."""

    @abstractmethod
    async def token_device(self, digest: str) -> Device | None:
        """The bound device whose current token has this digest."""

    @abstractmethod
    async def device_owner(self, user_id: str) -> User | None:
        """The user a device is bound to, by id (None when that user is gone)."""

    @abstractmethod
    async def list_devices(self, user_id: str | None = None) -> list[Device]: ...

    @abstractmethod
    async def rename_device(self, device_id: str, name: str) -> Device:
        """Name the device (every record of its MAC); NotFound (field `device`) if there is none."""

    @abstractmethod
    async def remove_device(self, device_id: str) -> None:
        """Forget the device (every Client-Id of its MAC) and its token: it must be activated again."""
