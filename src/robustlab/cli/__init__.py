"""The command line: a thin layer over the Python API.

Each subcommand lives in its own module here with an ``add_parser(subparsers)`` function
that registers its arguments and sets ``func`` to a callable taking the parsed
arguments and returning an exit status. Errors a user can fix (bad config, missing data
files, unknown names) are printed as one line, never as a traceback. A subcommand imports
the engine it runs (training, certification, experiments) and torch, NumPy, SciPy and
matplotlib inside its ``run`` function, never at the top, so that ``robustlab --help``
takes a fraction of a second instead of seconds (tests/test_cli_imports.py keeps it so).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable
from typing import Any

from robustlab import __version__
from robustlab.config import ConfigError
from robustlab.errors import RobustlabError
from robustlab.registry import UnknownNameError

COMMANDS = (
    "data",
    "train",
    "certify",
    "export",
    "verify",
    "smooth",
    "experiment",
    "theory",
    "report",
    "runs",
    "reproduce",
    "demo",
)


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an argument it does not know is its own error, printed with its
    usage line (argparse would hand it up to the top-level parser, whose usage says nothing
    about the subcommand's options)."""

    # Any: typeshed overloads this on the type of the caller's namespace, which is returned filled in
    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustlab",
        description="Certifiably robust image classification: train 1-Lipschitz networks, "
        "certify them, and run the experiments of 'Intriguing Properties of Robust Classification'.",
    )
    parser.add_argument("--version", action="version", version=f"robustlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"robustlab.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (RobustlabError, ConfigError, UnknownNameError, FileNotFoundError, ValueError) as error:
        print(f"robustlab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
