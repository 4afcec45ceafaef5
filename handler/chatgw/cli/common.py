"""What the commands share: their error, how any error ends a command, key ids, the clock, and plain tables."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeAlias

from chatgw.access.keys import KEY_ID_PATTERN
from chatgw.backends.base import CatalogError
from chatgw.errors import ChatgwError
from chatgw.settings import SettingsError

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What `register(subparsers)` of each command module adds its commands to."""
Command = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A refusal the operator can fix: printed on stderr, exit code `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def key_id_arg(text: str) -> str:
    if not KEY_ID_PATTERN.match(text):
        raise CliError(f"no such key: {text!r} is not a key id", code=1)
    return text


def now() -> datetime:
    return datetime.now(UTC)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    for line in [headers, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip())


def guarded(func: Command) -> Command:
    """Every CLI command's errors as one `chatgw: ...` line on stderr and an exit code, no traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CliError as exc:
            print(f"chatgw: {exc}", file=sys.stderr)
            return exc.code
        except SettingsError as exc:
            print(f"chatgw: {exc}", file=sys.stderr)
            return 2
        except ChatgwError as exc:
            print(f"chatgw: {_aws_hint(exc) or exc.message}", file=sys.stderr)
            return 1
        except CatalogError as exc:
            print(f"chatgw: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            raise
        except OSError as exc:
            if exc.filename is None:
                raise
            print(f"chatgw: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 1

    return run


def _aws_hint(exc: BaseException) -> str | None:
    """What an operator should do about a missing AWS credential or region behind a store error."""
    cause = exc.__cause__
    while cause is not None:
        name = type(cause).__name__
        if name == "NoCredentialsError":
            return "no AWS credentials found: configure them (aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID/...)"
        if name == "NoRegionError":
            return "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION) or pass --region"
        cause = cause.__cause__
    return None


def quiet_pipe(func: Command, args: argparse.Namespace) -> int:
    """A reader that stops early (`chatgw keys list | head -1`) ends the command quietly."""
    try:
        code = int(func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
        return 0
