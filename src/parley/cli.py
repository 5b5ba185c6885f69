"""The `parley` command: `serve` and `config` here, the other commands in `cli_local` and `cli_chat`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import SecretStr

from parley import __version__, cli_chat, cli_devices, cli_local, cli_sfu, cli_users
from parley.config import Settings, load_settings, settings_table


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
    except ConfigError as exc:
        print(f"parley: {exc.message}", file=sys.stderr)
        return 2
    if warning:
        print(f"parley: WARNING: {warning}", file=sys.stderr)
    setup(settings.log_level)  # after the refusals: a command that exits leaves logging alone
    # The lines name base URLs, which may carry credentials (https://user:key@host/v1).
    secrets = settings_secrets(settings)
    for line in describe_choice(settings):
        print(f"parley: {redact(line, secrets, shapes=False)}", file=sys.stderr)
    print(f"parley: serving on http://{settings.host}:{settings.port}", file=sys.stderr)
    # the options (and the request-head guard) are in web/server.py, shared with the tests
    uvicorn.run(create_app(settings, freeze_gc=True), **server_options(settings))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley", description="Parley: a self-hosted AI chat and voice server."
    )
    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=None, help="listen address (PARLEY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (PARLEY_PORT, default 8787)")
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
