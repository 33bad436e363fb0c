"""The ``server`` plugin: adds ``simpletuner server``. Light on purpose: aiohttp is imported in ``run``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from simpletuner_core import hookimpl
from simpletuner_core.records import CliCommand
from simpletuner_server.settings import DEFAULT_HOST, DEFAULT_PORT, parse_port


def _port_arg(text: str) -> int:
    """argparse type for ``--port``; also validates a string default taken from ``SIMPLETUNER_PORT``."""
    try:
        return parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Defaults are read from the environment when the parser is built, so ``--help`` shows them."""
    host = os.environ.get("SIMPLETUNER_HOST") or DEFAULT_HOST
    port = os.environ.get("SIMPLETUNER_PORT") or str(DEFAULT_PORT)
    parser.add_argument(
        "--host", default=host, help="interface to bind (env SIMPLETUNER_HOST; default %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port_arg, default=port, help="TCP port (env SIMPLETUNER_PORT; default %(default)s)"
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def setup_token_line(token: str) -> str:
    """The line the operator needs when no admin exists yet; the token is never stored in clear anywhere."""
    return (f"no admin account yet: create it with POST /api/cloud/auth/setup/first-admin from this machine, "
            f"or from elsewhere with header X-Setup-Token: {token}")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM); prints a line with the URL once listening, then the
    one-time setup token line when no admin account exists yet."""
    from aiohttp import web

    from simpletuner_server.app import create_app
    from simpletuner_server.settings import ServerSettings

    settings = ServerSettings.from_env(host=args.host, port=args.port)
    url = _url(settings.host, settings.port)
    tokens: list[str] = []  # filled at app startup, before ``announce`` runs

    def announce(*_: object, **__: object) -> None:
        print(f"simpletuner server listening on {url} (Ctrl-C to stop)", flush=True)
        while tokens:
            print(setup_token_line(tokens.pop()), flush=True)

    web.run_app(
        create_app(settings, on_setup_token=tokens.append), host=settings.host, port=settings.port,
        print=announce, shutdown_timeout=5.0,
    )
    return 0


@hookimpl
def register_cli_commands(register: Callable[[CliCommand], None]) -> None:
    """Contribute ``simpletuner server``."""
    register(
        CliCommand(
            name="server",
            help="run the HTTP API server (no torch needed)",
            add_arguments=add_arguments,
            run=run,
        )
    )
