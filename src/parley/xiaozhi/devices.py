"""Devices and their tokens: who a XiaoZhi device belongs to, and whether it may connect.

With PARLEY_AUTH=none every device is the local user's at its first OTA request. Otherwise an
unknown device gets a 6-digit activation code, which `parley devices bind CODE --user NAME`
gives to a user. A bound device gets a fresh token with every OTA answer (its earlier one stops
working): random, kept only as a SHA-256 digest (auth/credentials.py), checked when its
WebSocket opens. Removing a device (`parley devices remove`) revokes its token; it must be
activated again.

A device is its `Device-Id` (MAC) and `Client-Id` (a UUID it keeps) together: neither is a
secret, but an OTA request naming a bound MAC with another Client-Id is a new device that needs
a new code; it neither gets the bound one's token nor unbinds it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from parley.auth import credentials
from parley.errors import InvalidInput, NotFound, Unauthenticated
from parley.store.devices import Device, DeviceStore
from parley.store.users import LOCAL_USER, User

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
TOKEN_PREFIX = "xz_"
#: tries at a code not held by another pending device
CODE_TRIES = 20

NOT_VALID = (
    "the device token is not valid (unknown, replaced by a newer OTA answer, or the device was removed)"
)


def check_device_id(value: str | None) -> str:
    mac = (value or "").strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        raise InvalidInput(
            "Device-Id must be the device's MAC address, like aa:bb:cc:dd:ee:ff", field="Device-Id"
        )
    return mac


def check_client_id(value: str | None) -> str:
    client = (value or "").strip()
    if not CLIENT_ID_RE.match(client):
        raise InvalidInput(
            "Client-Id must be 1-64 letters, digits or _ . : - (the device's UUID)",
            field="Client-Id",
            limit=64,
        )
    return client


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def mint_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(slots=True, frozen=True)
class Registration:
    """What an OTA request learns: a token when the device is bound, else its activation code."""

    device: Device
    token: str | None = None

    @property
    def code(self) -> str | None:
        return self.device.code


class Devices:
    """The device rules over a DeviceStore; `open_mode` is PARLEY_AUTH=none (every device is local)."""

    def __init__(self, store: DeviceStore, *, open_mode: bool) -> None:
        self.store = store
        self.open_mode = open_mode

    async def register(self, device_id: str, client_id: str, firmware: str | None = None) -> Registration:
        """An OTA request: a fresh token for a bound device, else the (kept) activation code."""
        known = await self.store.device(device_id, client_id)
        if known is not None and known.bound and self._owner_ok(known):
            return Registration(known, await self._new_token(known, firmware))
        if self.open_mode:
            device = await self.store.add_device(
                device_id, client_id, code=None, user_id=LOCAL_USER.id, firmware=firmware
            )
            return Registration(device, await self._new_token(device, firmware))
        if known is not None and known.code is not None:
            return Registration(known)
        for _ in range(CODE_TRIES):
            try:
                device = await self.store.add_device(
                    device_id, client_id, code=new_code(), user_id=None, firmware=firmware
                )
            except InvalidInput:  # the code is pending for another device
                continue
            return Registration(device)
        raise InvalidInput("no free activation code; try again", field="code")

    async def activated(self, device_id: str, client_id: str) -> bool:
        """The activation poll: whether the device is bound yet (NotFound if it never asked)."""
        known = await self.store.device(device_id, client_id)
        if known is None:
            raise NotFound(
                "this device has not asked for activation: POST /xiaozhi/ota/ first", field="Device-Id"
            )
        return known.bound and self._owner_ok(known)

    async def bind(self, code: str, user: User) -> Device:
        if not re.fullmatch(r"\d{6}", code):
            raise InvalidInput("an activation code is 6 digits", field="code", limit=6)
        return await self.store.bind_device(code, user.id)

    async def authenticate(self, token: str | None, device_id: str | None) -> tuple[Device, User]:
        """The device a WebSocket's token belongs to and its user; Unauthenticated otherwise."""
        if not token:
            raise Unauthenticated(
                "send the device token from the OTA answer: `Authorization: Bearer <token>`",
                field="Authorization",
            )
        if len(token) > credentials.MAX_LENGTH:
            raise Unauthenticated(NOT_VALID, field="Authorization")
        return await self.by_digest(credentials.digest(token), field="Authorization", device_id=device_id)

    async def by_digest(
        self, digest: str, *, field: str, device_id: str | None = None
    ) -> tuple[Device, User]:
        """The device whose current token has this digest, and its user (bound, enabled);
        Unauthenticated naming `field` otherwise. On MQTT the digest is all a device shows
        (its topic's key), on a WebSocket it is the token's; `device_id`, when the device also
        says who it is, must be the token's device."""
        device = await self.store.token_device(digest)
        if device is None or device.user_id is None:
            raise Unauthenticated(NOT_VALID, field=field)
        if device_id is not None and check_device_id(device_id) != device.device_id:
            raise Unauthenticated("the token belongs to another device", field="Device-Id")
        user = await self.owner(device)
        if user is None or user.disabled:
            raise Unauthenticated("the device's user is disabled or gone", field=field)
        return device, user

    async def owner(self, device: Device) -> User | None:
        if device.user_id is None:
            return None
        if device.user_id == LOCAL_USER.id:
            # the local user exists only while PARLEY_AUTH=none: in another mode such a device is unbound
            return LOCAL_USER if self.open_mode else None
        return await self.store.device_owner(device.user_id)

    def _owner_ok(self, device: Device) -> bool:
        return self.open_mode or device.user_id != LOCAL_USER.id

    async def _new_token(self, device: Device, firmware: str | None) -> str:
        token = mint_token()
        await self.store.set_device_token(
            device, credentials.digest(token), credentials.shown_prefix(token), firmware=firmware
        )
        return token
