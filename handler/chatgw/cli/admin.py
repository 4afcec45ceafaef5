"""The operator's commands: `chatgw keys ...`, `chatgw usage`, `chatgw replay`, `chatgw tables create`.

They run with the operator's own credentials against the store the options name:
`--state-dir DIR` (SQLite), `--stack NAME` (the stack's KeysTableName/UsageTableName outputs) or
`--keys-table/--usage-table` (DynamoDB; AWS_ENDPOINT_URL_DYNAMODB is honoured by boto3), and
otherwise the gateway's own settings (CHATGW_KEYS_TABLE/CHATGW_USAGE_TABLE, CHATGW_STATE_DIR).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from chatgw.backends.base import CatalogError
from chatgw.cli import smoke
from chatgw.cli.common import CliError
from chatgw.cli.keys import (
    CLEAR,
    cmd_keys_create,
    cmd_keys_delete,
    cmd_keys_list,
    cmd_keys_rotate,
    cmd_keys_show,
    cmd_keys_update,
    limit_or_clear,
    positive,
    set_enabled,
)
from chatgw.cli.peppers import add_pepper_option, cmd_pepper_rotate, cmd_pepper_status
from chatgw.cli.usage import cmd_replay, cmd_usage
from chatgw.errors import ChatgwError
from chatgw.settings import Settings, SettingsError
from chatgw.store.base import Store
from chatgw.store.factory import SQLITE_FILE, open_dynamodb, open_from_settings

__all__ = [
    "CLEAR",
    "CliError",
    "add_store_options",
    "guarded",
    "main",
    "open_store",
    "parser",
    "quiet_pipe",
    "register",
]

DEFAULT_KEYS_TABLE = "chatgw-keys"
DEFAULT_USAGE_TABLE = "chatgw-usage"

# store options ----------------------------------------------------------------------------


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store (default: CHATGW_KEYS_TABLE/CHATGW_USAGE_TABLE, else CHATGW_STATE_DIR)")
    group.add_argument("--state-dir", default=None, help="the SQLite store's folder (default .chatgw)")
    group.add_argument("--stack", default=None, help="a deployed stack: its KeysTableName/UsageTableName outputs")
    group.add_argument("--keys-table", default=None, help="DynamoDB keys table")
    group.add_argument("--usage-table", default=None, help="DynamoDB usage table")
    group.add_argument("--region", default=None, help="AWS region (default: the AWS configuration's)")
    add_pepper_option(group)  # type: ignore[arg-type]


def existing_state_dir(args: argparse.Namespace) -> None:
    """A `--state-dir` that names no folder is a typo for a command that only reads or runs an event:
    a one-line error before anything is created (`chatgw serve` and the writers create it)."""
    state_dir = getattr(args, "state_dir", None)
    if state_dir and not Path(state_dir).is_dir():
        raise CliError(f"--state-dir {state_dir}: no such folder (nothing created; chatgw serve makes one)", code=2)


def open_store(args: argparse.Namespace, settings: Settings, *, must_exist: bool = False) -> Store:
    """The store named by the options, else by the settings (the gateway's environment).
    `must_exist`: a read-only command creates no SQLite folder or file: a `--state-dir` that is no
    folder is an error; a folder (or the default one) without a store says so and reads an empty store."""
    stack, keys_table, usage_table = (getattr(args, n, None) for n in ("stack", "keys_table", "usage_table"))
    region, state_dir = getattr(args, "region", None), getattr(args, "state_dir", None)
    chosen = [name for name, v in (("--state-dir", state_dir), ("--stack", stack)) if v]
    if keys_table or usage_table:
        chosen.append("--keys-table/--usage-table")
    if len(chosen) > 1:
        raise CliError(f"choose one store: {' or '.join(chosen)}", code=2)
    if must_exist:
        existing_state_dir(args)
    if bool(keys_table) != bool(usage_table):
        raise CliError("--keys-table and --usage-table go together", code=2)
    if stack:
        from chatgw.store.dynamodb.tables import stack_tables

        keys_table, usage_table = stack_tables(stack, region)
    if keys_table and usage_table:
        return open_dynamodb(keys_table, usage_table, settings, region=region)
    if state_dir:
        settings = replace(settings, state_dir=Path(state_dir), keys_table=None, usage_table=None)
    if settings.uses_dynamodb:
        return open_dynamodb(str(settings.keys_table), str(settings.usage_table), settings, region=region)
    if must_exist and not (settings.state_dir / SQLITE_FILE).exists():
        print(f"chatgw: no chatgw store in {settings.state_dir} yet (nothing created)", file=sys.stderr)
        from chatgw.store.sqlite import SqliteStore

        return SqliteStore(":memory:")  # empty, and nothing on disk
    return open_from_settings(settings)


# tables ---------------------------------------------------------------------------------


def cmd_tables_create(args: argparse.Namespace) -> int:
    from chatgw.store.dynamodb.tables import create_tables, make_client

    settings = Settings.from_env()
    keys_table = args.keys_table or settings.keys_table or DEFAULT_KEYS_TABLE
    usage_table = args.usage_table or settings.usage_table or DEFAULT_USAGE_TABLE
    created = create_tables(make_client(region=args.region), keys_table, usage_table)
    for name in (keys_table, usage_table):
        print(f"{'created' if name in created else 'exists '}  {name}")
    print(f"export CHATGW_KEYS_TABLE={keys_table} CHATGW_USAGE_TABLE={usage_table}")
    return 0


# wiring ---------------------------------------------------------------------------------

StoreCommand = Callable[[argparse.Namespace, Store, Settings], int]


def _with_store(command: StoreCommand, *, read_only: bool = False) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        settings = Settings.from_env()
        store = open_store(args, settings, must_exist=read_only)
        try:
            return command(args, store, settings)
        finally:
            store.close()

    return run


def guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
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


def quiet_pipe(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """A reader that stops early (`chatgw keys list | head -1`) ends the command quietly."""
    try:
        code = int(func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
        return 0


def _leaf(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    command: StoreCommand,
    *,
    key_id: bool = True,
    read_only: bool = False,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    if key_id:
        parser.add_argument("key_id", metavar="ID", help="the key's id (cgw_<id>_...)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_store_options(parser)
    parser.set_defaults(func=guarded(_with_store(command, read_only=read_only)))
    return parser


def _limit_options(parser: argparse.ArgumentParser, kind: Callable[[str], Any]) -> None:
    parser.add_argument("--rpm", type=kind, default=None, help="requests per minute")
    parser.add_argument("--tpm", type=kind, default=None, help="tokens per minute")
    parser.add_argument("--monthly-tokens", type=kind, default=None, help="monthly token budget")
    parser.add_argument("--max-tokens", type=kind, default=None, help="max tokens per request")
    parser.add_argument(
        "--shards", type=kind, default=None, help="DynamoDB: spread the key's counters over N items (hot keys)"
    )
    parser.add_argument(
        "--max-concurrent",
        type=kind,
        default=None,
        help="requests in flight at once (streamed or buffered); a leaked slot expires within 32 min",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="create and manage API keys", description="Manage API keys.")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = _leaf(ksub, "create", "create a key and print it, once", cmd_keys_create, key_id=False)
    create.add_argument("--name", required=True)
    create.add_argument("--owner", default=None)
    create.add_argument("--models", nargs="+", metavar="PATTERN", help="allowed models, glob patterns (default *)")
    create.add_argument("--no-streaming", action="store_true", help="refuse stream: true")
    _limit_options(create, positive)
    create.add_argument("--expires", default=None, help="ISO 8601 date/time, or 30d / 12h / 45m from now")
    create.add_argument("--tag", action="append", metavar="K=V")

    _leaf(ksub, "list", "list keys", cmd_keys_list, key_id=False, read_only=True)
    _leaf(ksub, "show", "show one key", cmd_keys_show, read_only=True)
    update = _leaf(ksub, "update", "change a key (limits: a number, or 'none' to remove)", cmd_keys_update)
    update.add_argument("--name", default=None)
    update.add_argument("--owner", default=None, help="'' to remove")
    update.add_argument("--models", nargs="+", metavar="PATTERN")
    streaming = update.add_mutually_exclusive_group()
    streaming.add_argument("--streaming", dest="streaming", action="store_true", default=None)
    streaming.add_argument("--no-streaming", dest="streaming", action="store_false")
    _limit_options(update, limit_or_clear)
    update.add_argument("--expires", default=None, help="ISO 8601, 30d / 12h / 45m from now, or 'never'")
    update.add_argument("--tag", action="append", metavar="K=V")
    update.add_argument("--untag", action="append", metavar="K")
    _leaf(ksub, "disable", "refuse every request of a key (within the key cache time)", set_enabled(False))
    _leaf(ksub, "enable", "enable a disabled key", set_enabled(True))
    _leaf(ksub, "rotate", "give a key a new secret; the old one stops working", cmd_keys_rotate)
    _leaf(ksub, "delete", "delete a key (its usage is kept)", cmd_keys_delete)

    pepper = subparsers.add_parser(
        "pepper", help="the versioned key peppers", description="The versioned peppers mixed into key hashes."
    )
    psub = pepper.add_subparsers(dest="pepper_command", required=True, metavar="COMMAND")
    _leaf(
        psub,
        "status",
        "the pepper source, its versions, and how many keys use each",
        cmd_pepper_status,
        key_id=False,
        read_only=True,
    )
    _leaf(psub, "rotate", "add a pepper version that new and rotated keys use", cmd_pepper_rotate, key_id=False)

    usage = subparsers.add_parser("usage", help="token usage per key", description="Token usage per key.")
    usage.add_argument("--key", default=None, metavar="ID")
    period = usage.add_mutually_exclusive_group()
    period.add_argument("--month", default=None, metavar="YYYY-MM", help="default: this month (UTC)")
    period.add_argument("--day", default=None, metavar="YYYY-MM-DD")
    period.add_argument("--from", dest="start", default=None, metavar="YYYY-MM-DD", help="first day (UTC)")
    usage.add_argument("--to", dest="end", default=None, metavar="YYYY-MM-DD", help="last day (default: today)")
    usage.add_argument("--by", default=None, metavar="GROUP", help="key (default), owner, tag:NAME, model or day")
    usage.add_argument("--by-model", action="store_true", help="the ledger's rows per key and served model")
    usage.add_argument("--json", action="store_true")
    usage.add_argument("--csv", action="store_true", help="the report as CSV")
    usage.add_argument("--html", default=None, metavar="FILE", help="write a self-contained HTML page with charts")
    add_store_options(usage)
    usage.set_defaults(func=guarded(_with_store(cmd_usage, read_only=True)))

    replay = subparsers.add_parser(
        "replay",
        help="record usage events from log lines",
        description="Record the `usage_event` log lines the gateway wrote when the store failed (idempotent).",
    )
    replay.add_argument("files", nargs="+", metavar="LOGFILE", help="log files, '-' for stdin")
    replay.add_argument("--json", action="store_true")
    add_store_options(replay)
    replay.set_defaults(func=guarded(_with_store(cmd_replay)))

    smoke.register(subparsers).set_defaults(func=guarded(smoke.cmd_smoke))

    tables = subparsers.add_parser("tables", help="DynamoDB tables", description="DynamoDB tables.")
    tsub = tables.add_subparsers(dest="tables_command", required=True, metavar="COMMAND")
    tcreate = tsub.add_parser("create", help="create the keys and usage tables as the template does")
    tcreate.add_argument("--keys-table", default=None, help=f"default CHATGW_KEYS_TABLE or {DEFAULT_KEYS_TABLE}")
    tcreate.add_argument("--usage-table", default=None, help=f"default CHATGW_USAGE_TABLE or {DEFAULT_USAGE_TABLE}")
    tcreate.add_argument("--region", default=None)
    tcreate.set_defaults(func=guarded(cmd_tables_create))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="chatgw", description=__doc__)
    register(root.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return quiet_pipe(args.func, args)
