"""`parley users ...` and `parley tokens ...`: the users and API tokens of PARLEY_AUTH=token.

They work on the configured store directly (the server need not run). A new token is printed once,
as the last line of standard output, so `TOKEN=$(parley users add alice | tail -1)` works; only
its digest is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from parley.auth.tokens import issue
from parley.config import load_settings
from parley.errors import InvalidInput, NotFound, ParleyError
from parley.store.factory import build_store
from parley.store.users import CredentialKind, UserStore


def _run(job: Callable[[UserStore], Awaitable[int]]) -> int:
    async def main() -> int:
        store = build_store(load_settings())
        await store.open()
        try:
            if not isinstance(store, UserStore):
                raise InvalidInput("this store keeps no users", field="PARLEY_DATABASE_URL")
            return await job(store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(main())
    except ParleyError as exc:
        print(f"parley: {exc.message}", file=sys.stderr)
        return 1


def _users_add(args: argparse.Namespace) -> int:
    async def job(users: UserStore) -> int:
        user = await users.add_user(args.name, admin=args.admin)
        token = await issue(users, user, CredentialKind.API)
        print(f"user {user.name} added{' (admin)' if user.admin else ''}; its API token (shown once):")
        print(token)
        return 0

    return _run(job)


def _users_list(args: argparse.Namespace) -> int:
    async def job(users: UserStore) -> int:
        for user in await users.list_users():
            flags = [f for f, on in (("admin", user.admin), ("disabled", user.disabled)) if on]
            print(f"{user.name}\t{','.join(flags) or '-'}")
        return 0

    return _run(job)


def _users_disable(args: argparse.Namespace, disabled: bool) -> int:
    async def job(users: UserStore) -> int:
        user = await users.set_disabled(args.name, disabled)
        print(f"user {user.name} {'disabled' if disabled else 'enabled'}")
        return 0

    return _run(job)


def _tokens_create(args: argparse.Namespace) -> int:
    async def job(users: UserStore) -> int:
        user = await users.user_named(args.name)
        if user is None:
            raise NotFound(f"no user named {args.name!r} (parley users add {args.name})", field="name")
        token = await issue(users, user, CredentialKind.API)
        print(f"a new API token for {user.name} (shown once):")
        print(token)
        return 0

    return _run(job)


def _tokens_revoke(args: argparse.Namespace) -> int:
    async def job(users: UserStore) -> int:
        if len(args.prefix) < 6:
            raise InvalidInput("give at least 6 characters of the token (parley tokens list)", field="prefix")
        revoked = await users.revoke_credentials(args.prefix)
        if revoked == 0:
            raise NotFound(f"no live token starts with {args.prefix!r}", field="prefix")
        print(f"revoked {revoked} token{'s' if revoked != 1 else ''}")
        return 0

    return _run(job)


def _tokens_list(args: argparse.Namespace) -> int:
    async def job(users: UserStore) -> int:
        now = time.time()
        for info in await users.list_credentials():
            if info.kind is not CredentialKind.API:
                continue
            state = (
                "revoked"
                if info.revoked
                else "expired"
                if info.expires_at and info.expires_at <= now
                else "live"
            )
            created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.created_at))
            print(f"{info.prefix}...\t{info.user}\t{state}\t{created}")
        return 0

    return _run(job)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", help="users of PARLEY_AUTH=token").add_subparsers(
        dest="users", required=True
    )
    add = users.add_parser("add", help="add a user and print its first API token")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may read /metrics and manage the server")
    add.set_defaults(func=_users_add)
    users.add_parser("list", help="list users").set_defaults(func=_users_list)
    disable = users.add_parser("disable", help="disable a user: their tokens and sign-ins stop working")
    disable.add_argument("name")
    disable.set_defaults(func=lambda a: _users_disable(a, True))
    enable = users.add_parser("enable", help="enable a disabled user again")
    enable.add_argument("name")
    enable.set_defaults(func=lambda a: _users_disable(a, False))

    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(dest="tokens", required=True)
    create = tokens.add_parser("create", help="print a new API token for a user")
    create.add_argument("name")
    create.set_defaults(func=_tokens_create)
    revoke = tokens.add_parser("revoke", help="revoke the tokens starting with PREFIX")
    revoke.add_argument("prefix")
    revoke.set_defaults(func=_tokens_revoke)
    tokens.add_parser("list", help="list API tokens (prefixes only)").set_defaults(func=_tokens_list)
