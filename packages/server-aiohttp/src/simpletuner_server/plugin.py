"""The ``server`` plugin: adds ``simpletuner server``. Light on purpose: aiohttp is imported in ``run``."""

from __future__ import annotations

import argparse
import os
import sys
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


def _bytes_arg(text: str) -> int:
    """argparse type for a byte count: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of bytes, got {text!r}")
    return value


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
    parser.add_argument("--home", default=None,
                        help="state directory (env SIMPLETUNER_HOME; default ~/.simpletuner)")
    parser.add_argument("--datasets-dir", default=None,
                        help="root for dataset uploads (env SIMPLETUNER_DATASETS_DIR; default HOME/datasets)")
    parser.add_argument("--max-body-bytes", type=_bytes_arg, default=None, metavar="BYTES",
                        help="largest JSON/form request body; larger ones get a 413 (env SIMPLETUNER_MAX_BODY_BYTES; "
                             "default 1 MiB; uploads and dataloader saves have their own limits)")
    parser.add_argument("--ray-address", default=os.environ.get("SIMPLETUNER_RAY_ADDRESS") or None,
                        metavar="ADDRESS", help="run jobs on this Ray cluster too ('auto': the local one; needs "
                        "simpletuner-executor-ray; env SIMPLETUNER_RAY_ADDRESS)")
    parser.add_argument("--env", default=None, metavar="NAME",
                        help="validate this environment and start it once the server is ready")


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
    from simpletuner_server.autostart import AutostartError, autostart
    from simpletuner_server.settings import ServerSettings

    overrides = {key: value for key, value in (("home", args.home), ("datasets_dir", args.datasets_dir),
                                               ("max_body_bytes", getattr(args, "max_body_bytes", None)))
                 if value is not None}
    settings = ServerSettings.from_env(host=args.host, port=args.port, **overrides)
    if getattr(args, "ray_address", None):
        import importlib.util

        from simpletuner_core.jobs import executors

        if importlib.util.find_spec("simpletuner_ray") is None:
            print("error: --ray-address needs the simpletuner-executor-ray package", file=sys.stderr, flush=True)
            return 2

        executors.enable("ray", address=args.ray_address)  # this process only: trainers never connect
    url = _url(settings.host, settings.port)
    tokens: list[str] = []  # filled at app startup, before ``announce`` runs

    def announce(*_: object, **__: object) -> None:
        print(f"simpletuner server listening on {url} (Ctrl-C to stop); dashboard: {url}/", flush=True)
        while tokens:
            print(setup_token_line(tokens.pop()), flush=True)

    app = create_app(settings, on_setup_token=tokens.append)
    if args.env:
        app.on_startup.append(autostart(args.env, lambda line: print(line, flush=True)))
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=announce, shutdown_timeout=5.0)
    except AutostartError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


@hookimpl
def register_cli_commands(register: Callable[[CliCommand], None]) -> None:
    """Contribute ``simpletuner server`` and ``simpletuner api-demo``."""
    from simpletuner_server import demo_command

    register(CliCommand(name="server", help="run the HTTP API server (no torch needed)",
                        add_arguments=add_arguments, run=run))
    register(CliCommand(name="api-demo", help="start a server and run the tutorial's API walkthrough on the tiny "
                        "PixArt Sigma (CPU)", add_arguments=demo_command.add_arguments, run=demo_command.run))
