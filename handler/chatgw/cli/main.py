"""`chatgw`: serve the gateway locally, run Lambda events through it, and manage keys and usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from chatgw import __version__
from chatgw.cli import invoke, keys, peppers, serve, smoke, tables, usage
from chatgw.cli.common import guarded, quiet_pipe

COMMAND_GROUPS = (serve, invoke, keys, peppers, usage, smoke, tables)
"""Each registers its own commands, in this order in `chatgw --help`."""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="chatgw", description=__doc__)
    root.add_argument("--version", action="version", version=f"chatgw {__version__}")
    sub = root.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return quiet_pipe(guarded(args.func), args)


if __name__ == "__main__":
    sys.exit(main())
