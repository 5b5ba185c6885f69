"""The user's XiaoZhi devices, for the web app's Devices page: list, bind by code, rename, remove.

GET    /api/devices                 the requesting user's devices (and whether each is online here)
POST   /api/devices/bind {code}     the device showing this 6-digit code becomes the user's
PATCH  /api/devices/{mac} {name}    rename one of the user's devices
DELETE /api/devices/{mac}           unbind it: its token stops working, its socket here is closed

The same rules as `parley devices` (xiaozhi/devices.py); a device of another user is a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from parley.errors import InvalidInput, NotFound
from parley.store.devices import Device
from parley.store.users import User
from parley.web import schemas
from parley.web.body import read_json, validate
from parley.web.users import current_user
from parley.web.xiaozhi import devices_of, live_devices
from parley.xiaozhi.devices import check_device_id

router = APIRouter()

NAME_MAX = schemas.DEVICE_NAME_MAX
#: the WebSocket close code a removed device's socket gets (policy violation: no longer allowed)
CLOSE_REMOVED = 1008


def _wire(device: Device, online: bool) -> dict[str, Any]:
    return {
        "deviceId": device.device_id,
        "name": device.name,
        "boundAt": device.bound_at,
        "firmware": device.firmware,
        "online": online,
    }


async def _own(request: Request, user: User, mac: str) -> Device:
    device_id = check_device_id(mac)
    for device in await devices_of(request).store.list_devices(user.id):
        if device.device_id == device_id:
            return device
    raise NotFound(f"you have no device {device_id}", field="deviceId")


@router.get("/api/devices", responses=schemas.ERRORS, summary="The user's XiaoZhi devices")
async def list_devices(request: Request) -> dict[str, Any]:
    user = current_user(request)
    live = live_devices(request)
    found = await devices_of(request).store.list_devices(user.id)
    return {"devices": [_wire(d, d.device_id in live) for d in found]}


@router.post(
    "/api/devices/bind",
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(schemas.BindIn),
    summary="Bind the device showing an activation code to the user",
)
async def bind(request: Request) -> dict[str, Any]:
    body = validate(schemas.BindIn, await read_json(request, limit=1024))
    code = (body.code or "").strip()
    device = await devices_of(request).bind(code, current_user(request))
    return _wire(device, device.device_id in live_devices(request))


@router.patch(
    "/api/devices/{mac}",
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(schemas.DeviceNameIn),
    summary="Rename one of the user's devices",
)
async def rename(request: Request, mac: str) -> dict[str, Any]:
    user = current_user(request)
    body = validate(schemas.DeviceNameIn, await read_json(request, limit=1024))
    name = (body.name or "").strip()
    if not 0 < len(name) <= NAME_MAX:
        raise InvalidInput(f"name must be 1-{NAME_MAX} characters", field="name", limit=NAME_MAX)
    device = await _own(request, user, mac)
    renamed = await devices_of(request).store.rename_device(device.device_id, name)
    return _wire(renamed, renamed.device_id in live_devices(request))


@router.delete("/api/devices/{mac}", responses=schemas.ERRORS, summary="Unbind one of the user's devices")
async def remove(request: Request, mac: str) -> dict[str, Any]:
    user = current_user(request)
    device = await _own(request, user, mac)
    await devices_of(request).store.remove_device(device.device_id)
    connection = live_devices(request).get(device.device_id)
    if connection is not None:
        await connection.channel.close(CLOSE_REMOVED, "this device was removed by its user")
    return {"removed": device.device_id}
