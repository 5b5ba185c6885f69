"""`parley devices ...`: the XiaoZhi devices of the configured store (the server need not run).

`bind CODE --user NAME` gives the device showing CODE to a user; `list`, `rename`, and `remove`
(unbind: its token stops working and it must be activated again).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from parley.config import load_settings
from parley.errors import InvalidInput, NotFound, ParleyError
from parley.store.devices import DeviceStore
from parley.store.factory import build_store
from parley.store.users import LOCAL_USER, UserStore
from parley.xiaozhi.devices import Devices, check_device_id


def _run(job: Callable[[DeviceStore, UserStore], Awaitable[int]]) -> int:
    async def main() -> int:
        store = build_store(load_settings())
        await store.open()
        try:
            if not isinstance(store, DeviceStore) or not isinstance(store, UserStore):
                raise InvalidInput("this store keeps no devices", field="PARLEY_DATABASE_URL")
            return await job(store, store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(main())
    except ParleyError as exc:
        print(f"parley: {exc.message}", file=sys.stderr)
        return 1


def _bind(args: argparse.Namespace) -> int:
    async def job(devices: DeviceStore, users: UserStore) -> int:
        user = LOCAL_USER if args.user == LOCAL_USER.name else await users.user_named(args.user)
        if user is None:
            raise NotFound(f"no user named {args.user!r} (parley users add {args.user})", field="user")
        device = await Devices(devices, open_mode=False).bind(args.code.strip(), user)
        print(f"device {device.device_id} is {user.name}'s now")
        return 0

    return _run(job)


def _list(args: argparse.Namespace) -> int:
    async def job(devices: DeviceStore, users: UserStore) -> int:
        names = {u.id: u.name for u in await users.list_users()} | {LOCAL_USER.id: LOCAL_USER.name}
        for d in await devices.list_devices():
            owner = names.get(d.user_id or "", "-") if d.bound else f"waiting for code {d.code}"
            seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(d.created_at))
            print(f"{d.device_id}\t{d.name}\t{owner}\t{d.firmware or '-'}\t{seen}")
        return 0

    return _run(job)


def _rename(args: argparse.Namespace) -> int:
    async def job(devices: DeviceStore, users: UserStore) -> int:
        device = await devices.rename_device(check_device_id(args.device), args.name)
        print(f"device {device.device_id} is called {device.name!r}")
        return 0

    return _run(job)


def _remove(args: argparse.Namespace) -> int:
    async def job(devices: DeviceStore, users: UserStore) -> int:
        mac = check_device_id(args.device)
        await devices.remove_device(mac)
        print(f"device {mac} removed: its token no longer works; it must be activated again")
        return 0

    return _run(job)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devices = sub.add_parser("devices", help="XiaoZhi devices: bind, list, rename, remove")
    verbs = devices.add_subparsers(dest="verb", required=True)
    bind = verbs.add_parser("bind", help="give the device showing CODE to a user")
    bind.add_argument("code", help="the 6-digit code the device shows or speaks")
    bind.add_argument("--user", required=True, help="the user's name (`local` with PARLEY_AUTH=none)")
    bind.set_defaults(func=_bind)
    verbs.add_parser("list", help="every device, its owner or pending code").set_defaults(func=_list)
    rename = verbs.add_parser("rename", help="name a device")
    rename.add_argument("device", help="its Device-Id (MAC)")
    rename.add_argument("name")
    rename.set_defaults(func=_rename)
    remove = verbs.add_parser("remove", help="unbind a device and revoke its token")
    remove.add_argument("device", help="its Device-Id (MAC)")
    remove.set_defaults(func=_remove)
