"""The store a command runs against, from its options.

Commands run with the operator's own credentials against the store the options name:
`--state-dir DIR` (SQLite), `--stack NAME` (the stack's KeysTableName/UsageTableName outputs) or
`--keys-table/--usage-table` (DynamoDB; AWS_ENDPOINT_URL_DYNAMODB is honoured by boto3), and
otherwise the gateway's own settings (CHATGW_KEYS_TABLE/CHATGW_USAGE_TABLE, CHATGW_STATE_DIR).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from chatgw.cli.common import CliError, Command, Subparsers
from chatgw.settings import Settings
from chatgw.store.base import Store
from chatgw.store.factory import SQLITE_FILE, open_dynamodb, open_from_settings

StoreCommand = Callable[[argparse.Namespace, Store, Settings], int]


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store (default: CHATGW_KEYS_TABLE/CHATGW_USAGE_TABLE, else CHATGW_STATE_DIR)")
    group.add_argument("--state-dir", default=None, help="the SQLite store's folder (default .chatgw)")
    group.add_argument("--stack", default=None, help="a deployed stack: its KeysTableName/UsageTableName outputs")
    group.add_argument("--keys-table", default=None, help="DynamoDB keys table")
    group.add_argument("--usage-table", default=None, help="DynamoDB usage table")
    group.add_argument("--region", default=None, help="AWS region (default: the AWS configuration's)")
    group.add_argument(
        "--pepper-secret",
        default=None,
        metavar="ARN",
        help="Secrets Manager secret of the key peppers (default: the stack's PepperSecretArn, CHATGW_PEPPER_SECRET)",
    )


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


def with_store(command: StoreCommand, *, read_only: bool = False) -> Command:
    """The command run with the store its options name, closed afterwards."""

    def run(args: argparse.Namespace) -> int:
        settings = Settings.from_env()
        store = open_store(args, settings, must_exist=read_only)
        try:
            return command(args, store, settings)
        finally:
            store.close()

    return run


def store_command(
    sub: Subparsers,
    name: str,
    help_text: str,
    command: StoreCommand,
    *,
    key_id: bool = True,
    read_only: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand on one store (and one key of it, `key_id`), with `--json` and the store options."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    if key_id:
        parser.add_argument("key_id", metavar="ID", help="the key's id (cgw_<id>_...)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_store_options(parser)
    parser.set_defaults(func=with_store(command, read_only=read_only))
    return parser
