"""``simpletuner`` entry point: subcommands come from the ``register_cli_commands`` hook.

Bad input exits 2 with a one-line reason; a failed training exits 1. Nothing here imports torch until a
command that trains runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from simpletuner_core.cli import UsageError


def build_parser() -> argparse.ArgumentParser:
    from simpletuner_core import __version__
    from simpletuner_core.plugins import get_registry

    parser = argparse.ArgumentParser(prog="simpletuner", description="Fine-tune diffusion models.")
    parser.add_argument("--version", action="version", version=f"simpletuner-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in get_registry().cli_commands.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except Exception as exc:  # a broken plugin must not hide the reason
        print(f"simpletuner: cannot load plugins: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args) or 0)
    except UsageError as exc:
        print(f"simpletuner {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"simpletuner {args.command}: interrupted", file=sys.stderr)
        return 130
