"""The ``thrifty`` command: ``list`` the catalogue, ``bench`` the claims, ``speed`` optimizers, ``train`` a workload,
``serve`` a model, ``simulate`` serving policies, ``diffusion`` sample and distill.

One module per command, each with ``register(subparsers)`` adding parsers whose ``func(args, console) -> int`` may
raise ``UsageError`` (one line on stderr, exit status 2). The commands only parse, check and print: what they run is
library API.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rich.console import Console

from thrifty.cli.errors import UsageError

__all__ = ["COMMANDS", "UsageError", "build_parser", "main", "make_console"]

# The command modules, in the order ``thrifty --help`` lists them.
COMMANDS: tuple[str, ...] = ("listing", "bench", "speed", "train", "serve", "simulate", "diffusion")

# Width of a console that is not a terminal: wide enough that piped tables keep whole rows and words.
_PIPE_WIDTH = 100_000


def make_console() -> Console:
    """The console the commands print to: the terminal's width, or unbounded when output is piped or redirected."""
    console = Console()
    return console if console.is_terminal else Console(width=_PIPE_WIDTH)


def build_parser() -> argparse.ArgumentParser:
    """The ``thrifty`` argument parser with every command's subparser."""
    parser = argparse.ArgumentParser(
        prog="thrifty",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"thrifty.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``thrifty`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, make_console())
    except UsageError as exc:
        command = " ".join(filter(None, (args.command, getattr(args, "diffusion_command", None))))
        print(f"thrifty {command}: error: {exc}", file=sys.stderr)
        return 2
