"""The `parley` command: `serve` and `config` here, the other commands in `cli_local` and `cli_chat`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import SecretStr

from parley import __version__, cli_chat, cli_devices, cli_local, cli_sfu, cli_users
from parley.config import Settings, load_settings, settings_table
from parley.web.server import HeadGuard

if TYPE_CHECKING:
    from fastapi import FastAPI

#: what `parley serve --workers N` (N > 1) tells its workers through their inherited environment:
#: N, so each worker names itself `<node id>-<pid>` (not a setting: no PARLEY_ prefix, Settings
#: never sees it)
WORKERS_VARIABLE = "_PARLEY_SERVE_WORKERS"
#: room a worker's "-<pid>" needs in PARLEY_NODE_ID (128 characters at most; Linux pids have 7 digits)
_PID_ROOM = 8


class WorkerHeadGuard(HeadGuard):
    """The request-head guard of a `--workers` worker. uvicorn pickles its options to each worker
    process, and the class `head_guard(settings)` makes inside a function does not pickle; this
    one does, and `worker_app` gives it the limits of the worker's settings."""


def worker_app() -> FastAPI:
    """The app of one `parley serve --workers N` worker: uvicorn calls this in each worker process.

    Settings come from the environment, `.env` and PARLEY_SECRETS_DIR as in `serve` (which put
    --host and --port into the environment it passed on); with N > 1 the node id is PARLEY_NODE_ID
    (else the host name) plus `-<this worker's pid>`, so the workers' ids differ.
    """
    from parley.app import create_app
    from parley.logs import setup

    settings = load_settings()
    if int(os.environ.get(WORKERS_VARIABLE, "1")) > 1:
        settings = load_settings(node_id=f"{settings.resolved_node_id}-{os.getpid()}")
    WorkerHeadGuard.max_head_bytes = settings.max_header_bytes
    WorkerHeadGuard.max_headers = settings.max_headers
    WorkerHeadGuard.head_timeout = settings.header_timeout_seconds
    setup(settings.log_level)
    return create_app(settings, freeze_gc=True)


def _check_workers(settings: Settings, workers: int) -> str | None:
    """Refuse what N worker processes cannot run on (ConfigError); a warning, or None."""
    from parley.app import create_app
    from parley.errors import ConfigError

    if not settings.redis_url:
        raise ConfigError(
            f"--workers {workers} needs PARLEY_REDIS_URL (redis://host:6379/0): each worker is a process "
            "of its own, and only Redis carries session events and ownership between them",
            field="PARLEY_REDIS_URL",
        )
    if len(settings.resolved_node_id) > 128 - _PID_ROOM:
        raise ConfigError(
            f"--workers adds '-<pid>' to the node id: PARLEY_NODE_ID may have at most {128 - _PID_ROOM} "
            "characters",
            field="PARLEY_NODE_ID",
        )
    # what create_app refuses, refused once here rather than by every worker as it starts
    create_app(settings)
    if settings.resolved_database_url.startswith("sqlite"):
        return (
            f"{workers} workers share one SQLite file; PostgreSQL (PARLEY_DATABASE_URL=postgresql://...) "
            "is the tested store for several processes"
        )
    return None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from parley.app import create_app
    from parley.auth.exposure import check_exposure
    from parley.errors import ConfigError
    from parley.logs import setup
    from parley.providers.factory import describe_choice
    from parley.redact import redact, settings_secrets
    from parley.web.server import server_options

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    try:
        # an explicit PARLEY_AUTH=none (environment, .env or secrets file) is needed to open up
        warning = check_exposure(settings, [settings.host], auth_explicit="auth" in settings.model_fields_set)
        workers_warning = _check_workers(settings, args.workers) if args.workers > 1 else None
    except ConfigError as exc:
        print(f"parley: {exc.message}", file=sys.stderr)
        return 2
    for found in (warning, workers_warning):
        if found:
            print(f"parley: WARNING: {found}", file=sys.stderr)
    setup(settings.log_level)  # after the refusals: a command that exits leaves logging alone
    # The lines name base URLs, which may carry credentials (https://user:key@host/v1).
    secrets = settings_secrets(settings)
    for line in describe_choice(settings):
        print(f"parley: {redact(line, secrets, shapes=False)}", file=sys.stderr)
    print(f"parley: serving on http://{settings.host}:{settings.port}", file=sys.stderr)
    if args.workers == 1:
        # the options (and the request-head guard) are in web/server.py, shared with the tests
        uvicorn.run(create_app(settings, freeze_gc=True), **server_options(settings))
        return 0
    print(f"parley: {args.workers} workers, node ids {settings.resolved_node_id}-<pid>", file=sys.stderr)
    # the workers build their settings again from this environment: --host and --port go with it
    os.environ.update(
        {"PARLEY_HOST": settings.host, "PARLEY_PORT": str(settings.port), WORKERS_VARIABLE: str(args.workers)}
    )
    options = server_options(settings) | {"http": WorkerHeadGuard}
    uvicorn.run("parley.cli:worker_app", factory=True, workers=args.workers, **options)
    return 0


def _config(args: argparse.Namespace) -> int:
    if args.markdown:
        print("| variable | default | meaning |\n|---|---|---|")
        for env, default, help_ in settings_table():
            print(f"| `{env}` | {'`' + default + '`' if default else ''} | {help_} |")
        return 0
    settings = load_settings()
    # settings_table() lists the fields in declaration order, so the two line up one to one.
    for name, (env, _default, _help) in zip(Settings.model_fields, settings_table(), strict=True):
        value = getattr(settings, name)
        # The type says what is secret, not the name: PARLEY_MAX_TOKENS and a TURN key's id are not.
        shown = "(set)" if isinstance(value, SecretStr) else value
        print(f"{env}={'' if value is None else shown}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley", description="Parley: a self-hosted AI chat and voice server."
    )
    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=None, help="listen address (PARLEY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (PARLEY_PORT, default 8787)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="run N worker processes on one port (default 1). N > 1 needs PARLEY_REDIS_URL (and "
        "PostgreSQL is the tested store); each worker's node id is PARLEY_NODE_ID, or the host name, "
        "plus '-<its pid>'",
    )
    serve.set_defaults(func=_serve)
    config = sub.add_parser("config", help="show the effective settings (secrets hidden)")
    config.add_argument("--markdown", action="store_true", help="print the settings table for docs")
    config.set_defaults(func=_config)
    cli_local.add_commands(sub)
    cli_chat.add_command(sub)
    cli_sfu.add_command(sub)
    cli_users.add_commands(sub)
    cli_devices.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
