"""`chatgw tables create`: the keys and usage tables, as the template makes them."""

from __future__ import annotations

import argparse

from chatgw.cli.common import Subparsers
from chatgw.settings import Settings

DEFAULT_KEYS_TABLE = "chatgw-keys"
DEFAULT_USAGE_TABLE = "chatgw-usage"


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


def register(subparsers: Subparsers) -> None:
    tables = subparsers.add_parser("tables", help="DynamoDB tables", description="DynamoDB tables.")
    tsub = tables.add_subparsers(dest="tables_command", required=True, metavar="COMMAND")
    tcreate = tsub.add_parser("create", help="create the keys and usage tables as the template does")
    tcreate.add_argument("--keys-table", default=None, help=f"default CHATGW_KEYS_TABLE or {DEFAULT_KEYS_TABLE}")
    tcreate.add_argument("--usage-table", default=None, help=f"default CHATGW_USAGE_TABLE or {DEFAULT_USAGE_TABLE}")
    tcreate.add_argument("--region", default=None)
    tcreate.set_defaults(func=cmd_tables_create)
