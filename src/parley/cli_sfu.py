"""`parley sfu`: run the local Cloudflare Realtime SFU stand-in (`parley.standins.sfu`).

The app secret is read like Parley's other secrets: CLOUDFLARE_REALTIME_APP_SECRET in the
environment, else a file of that name in PARLEY_SECRETS_DIR. Without one, a random secret is made
for this run and printed once, so `parley serve` can be pointed at it.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

APP_ID_VAR = "CLOUDFLARE_REALTIME_APP_ID"
APP_SECRET_VAR = "CLOUDFLARE_REALTIME_APP_SECRET"
DEFAULT_APP_ID = "parley-local"

DESCRIPTION = """\
Run a local stand-in for the Cloudflare Realtime SFU API, for development and tests.

It is a single-process stand-in, not an SFU for production: no TURN, no scaling beyond one
process, and it decodes and re-encodes audio for every puller. Point Parley at it with
PARLEY_REALTIME_BASE_URL=http://HOST:PORT/v1 and the same app id and secret.
"""
WARNING = (
    "parley sfu: a single-process stand-in for development and tests, not an SFU for production "
    "(no TURN, no scaling, re-encodes audio)"
)


def resolve_credentials(app_id: str | None, environ: Mapping[str, str], err: TextIO) -> tuple[str, str]:
    """(app id, secret): from the flag/environment/secrets directory, else a fresh secret, told once."""
    resolved_id = app_id or environ.get(APP_ID_VAR) or DEFAULT_APP_ID
    secret = environ.get(APP_SECRET_VAR, "").strip()
    secrets_dir = environ.get("PARLEY_SECRETS_DIR")
    if not secret and secrets_dir:
        path = Path(secrets_dir) / APP_SECRET_VAR
        if path.is_file():
            secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        secret = secrets.token_urlsafe(24)
        print(
            f"parley sfu: {APP_SECRET_VAR} is not set; this run's secret (shown only now) is\n"
            f"    export {APP_SECRET_VAR}={secret}\n"
            "  export it, with the lines below, in the shell of `parley serve`.",
            file=err,
        )
    return resolved_id, secret


def sfu(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from parley.standins.sfu import create_app
    except ImportError as exc:
        print(f"parley sfu needs aiortc ({exc}): pip install 'parley[local]'", file=sys.stderr)
        return 1
    from parley.logs import setup

    setup("INFO")
    # aioice logs every ICE candidate pair check at INFO: noise for someone developing against this
    logging.getLogger("aioice").setLevel(logging.WARNING)
    app_id, secret = resolve_credentials(args.app_id, os.environ, sys.stderr)
    print(WARNING, file=sys.stderr)
    print(
        f"parley sfu: for `parley serve`:\n"
        f"    export PARLEY_REALTIME_BASE_URL=http://{args.host}:{args.port}/v1\n"
        f"    export {APP_ID_VAR}={app_id}",
        file=sys.stderr,
    )
    uvicorn.run(
        create_app(app_id=app_id, app_secret=secret), host=args.host, port=args.port, log_level="info"
    )
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "sfu",
        help="run a local Cloudflare Realtime SFU stand-in (development and tests only)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    cmd.add_argument("--port", type=int, default=8788, help="listen port (default %(default)s)")
    cmd.add_argument(
        "--app-id",
        default=None,
        help=f"the app id clients use ({APP_ID_VAR}, default {DEFAULT_APP_ID})",
    )
    cmd.set_defaults(func=sfu)
