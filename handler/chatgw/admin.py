"""The operator's commands: `chatgw keys ...`, `chatgw usage`, `chatgw tables create`.

They run with the operator's own credentials against the store the options name:
`--state-dir DIR` (SQLite), `--stack NAME` (the stack's KeysTableName/UsageTableName outputs) or
`--keys-table/--usage-table` (DynamoDB; AWS_ENDPOINT_URL_DYNAMODB is honoured by boto3), and
otherwise the gateway's own settings (CHATGW_KEYS_TABLE/CHATGW_USAGE_TABLE, CHATGW_STATE_DIR).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import ChatgwError
from .keys import KEY_ID_PATTERN, KeyRecord, Limits, format_key, hash_secret, new_key, new_secret
from .limits import day_of, month_of
from .settings import Settings, SettingsError
from .store.base import KeyExists, KeyNotFound, Store, UsageQuery, UsageRow
from .store.factory import open_dynamodb, open_from_settings

DEFAULT_KEYS_TABLE = "chatgw-keys"
DEFAULT_USAGE_TABLE = "chatgw-usage"
CLEAR = "none"
LIMIT_FLAGS = {
    "rpm": "requests_per_minute",
    "tpm": "tokens_per_minute",
    "monthly_tokens": "monthly_token_budget",
    "max_tokens": "max_tokens_per_request",
}


class CliError(Exception):
    """A refusal the operator can fix: printed on stderr, exit code `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# store options ----------------------------------------------------------------------------


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store (default: CHATGW_KEYS_TABLE/CHATGW_USAGE_TABLE, else CHATGW_STATE_DIR)")
    group.add_argument("--state-dir", default=None, help="the SQLite store's folder (default .chatgw)")
    group.add_argument("--stack", default=None, help="a deployed stack: its KeysTableName/UsageTableName outputs")
    group.add_argument("--keys-table", default=None, help="DynamoDB keys table")
    group.add_argument("--usage-table", default=None, help="DynamoDB usage table")
    group.add_argument("--region", default=None, help="AWS region (default: the AWS configuration's)")


def open_store(args: argparse.Namespace, settings: Settings) -> Store:
    """The store named by the options, else by the settings (the gateway's environment)."""
    stack, keys_table, usage_table = (getattr(args, n, None) for n in ("stack", "keys_table", "usage_table"))
    region, state_dir = getattr(args, "region", None), getattr(args, "state_dir", None)
    chosen = [name for name, v in (("--state-dir", state_dir), ("--stack", stack)) if v]
    if keys_table or usage_table:
        chosen.append("--keys-table/--usage-table")
    if len(chosen) > 1:
        raise CliError(f"choose one store: {' or '.join(chosen)}", code=2)
    if bool(keys_table) != bool(usage_table):
        raise CliError("--keys-table and --usage-table go together", code=2)
    if stack:
        from .store.dynamodb import stack_tables

        keys_table, usage_table = stack_tables(stack, region)
    if keys_table and usage_table:
        return open_dynamodb(keys_table, usage_table, settings, region=region)
    if state_dir:
        settings = replace(settings, state_dir=Path(state_dir), keys_table=None, usage_table=None)
    if settings.uses_dynamodb:
        return open_dynamodb(str(settings.keys_table), str(settings.usage_table), settings, region=region)
    return open_from_settings(settings)


# argument types -------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _limit_or_clear(text: str) -> int | str:
    return CLEAR if text.lower() == CLEAR else _positive(text)


_DURATION = re.compile(r"^(\d+)([dhm])$")


def parse_expiry(text: str, now: datetime) -> datetime:
    """`30d`, `12h`, `45m` from now, or an ISO 8601 date or time (UTC when it names no zone)."""
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now + timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: amount})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--expires: expected ISO 8601 (2026-12-31T00:00Z) or 30d/12h/45m, got {text!r}", 2) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _tags(pairs: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--tag: expected k=v, got {pair!r}", code=2)
        tags[name] = value
    return tags


# keys -----------------------------------------------------------------------------------


def _key_id(text: str) -> str:
    if not KEY_ID_PATTERN.match(text):
        raise CliError(f"no such key: {text!r} is not a key id", code=1)
    return text


def _get(store: Store, key_id: str) -> KeyRecord:
    record = store.get_key(_key_id(key_id))
    if record is None:
        raise CliError(f"no such key: {key_id}")
    return record


def _print_record(record: KeyRecord, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    data = {**(extra or {}), **record.public_dict()}
    if as_json:
        print(json.dumps(data, indent=2))
        return
    for name, value in data.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        print(f"{name:16} {value if value is not None else '-'}")


def _limits_text(limits: Limits) -> str:
    short = {"requests_per_minute": "rpm", "tokens_per_minute": "tpm", "monthly_token_budget": "month"}
    short["max_tokens_per_request"] = "max"
    return " ".join(f"{short[k]}={v}" for k, v in limits.to_dict().items()) or "-"


def cmd_keys_create(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    now = datetime.now(UTC)
    limits = Limits(**{LIMIT_FLAGS[f]: getattr(args, f) for f in LIMIT_FLAGS if getattr(args, f) is not None})
    key, record = new_key(
        args.name,
        pepper=settings.pepper,
        now=now,
        owner=args.owner,
        expires_at=parse_expiry(args.expires, now) if args.expires else None,
        allowed_models=tuple(args.models or ["*"]),
        allow_streaming=not args.no_streaming,
        limits=limits,
        tags=_tags(args.tag or []),
    )
    try:
        store.create_key(record)
    except KeyExists:
        raise CliError("a key with this id exists already; run the command again") from None
    if args.json:
        print(json.dumps({"key": key, **record.public_dict()}, indent=2))
    else:
        print(f"Created key {record.key_id} ({record.name}). The key, shown this once:\n\n    {key}\n")
    return 0


def cmd_keys_list(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    records = store.list_keys()
    if args.json:
        print(json.dumps([r.public_dict() for r in records], indent=2))
        return 0
    rows = [
        [
            r.key_id,
            r.name,
            r.owner or "-",
            "yes" if r.enabled else "no",
            r.expires_at.isoformat(timespec="minutes") if r.expires_at else "-",
            ",".join(r.allowed_models),
            _limits_text(r.limits),
        ]
        for r in records
    ]
    _table(["KEY_ID", "NAME", "OWNER", "ENABLED", "EXPIRES", "MODELS", "LIMITS"], rows)
    return 0


def cmd_keys_show(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    _print_record(_get(store, args.key_id), args.json)
    return 0


def _save(store: Store, record: KeyRecord) -> None:
    try:
        store.save_key(record)
    except KeyNotFound:
        raise CliError(f"no such key: {record.key_id}") from None


def cmd_keys_update(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    record = _get(store, args.key_id)
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.owner is not None:
        changes["owner"] = None if args.owner == "" else args.owner
    if args.models:
        changes["allowed_models"] = tuple(args.models)
    if args.streaming is not None:
        changes["allow_streaming"] = args.streaming
    if args.expires is not None:
        changes["expires_at"] = None if args.expires.lower() == "never" else parse_expiry(args.expires, _now())
    limits = record.limits.to_dict()
    for flag, name in LIMIT_FLAGS.items():
        value = getattr(args, flag)
        if value == CLEAR:
            limits.pop(name, None)
        elif value is not None:
            limits[name] = value
    changes["limits"] = Limits(**limits)
    tags = {**record.tags, **_tags(args.tag or [])}
    for name in args.untag or []:
        tags.pop(name, None)
    changes["tags"] = tags
    updated = record.with_changes(**changes)
    _save(store, updated)
    _print_record(updated, args.json)
    return 0


def _now() -> datetime:
    return datetime.now(UTC)


def _set_enabled(enabled: bool) -> Callable[[argparse.Namespace, Store, Settings], int]:
    def command(args: argparse.Namespace, store: Store, settings: Settings) -> int:
        updated = _get(store, args.key_id).with_changes(enabled=enabled)
        _save(store, updated)
        _print_record(updated, args.json)
        return 0

    return command


def cmd_keys_rotate(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    record = _get(store, args.key_id)
    secret = new_secret()
    _save(store, record.with_changes(secret_hash=hash_secret(secret, settings.pepper)))
    key = format_key(record.key_id, secret)
    if args.json:
        print(json.dumps({"key": key, **record.public_dict()}, indent=2))
    else:
        print(f"Rotated key {record.key_id}; the old secret no longer works. The new key, shown this once:")
        print(f"\n    {key}\n")
    return 0


def cmd_keys_delete(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    if not store.delete_key(_key_id(args.key_id)):
        raise CliError(f"no such key: {args.key_id}")
    print(json.dumps({"key_id": args.key_id, "deleted": True}) if args.json else f"Deleted key {args.key_id}.")
    return 0


# usage ----------------------------------------------------------------------------------


def _period(args: argparse.Namespace) -> UsageQuery:
    if args.day:
        try:
            day = datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise CliError(f"--day: expected YYYY-MM-DD, got {args.day!r}", code=2) from None
        return UsageQuery("day", day_of(day), key_id=args.key, by_model=args.by_model)
    if args.month:
        try:
            month = datetime.strptime(args.month, "%Y-%m").replace(tzinfo=UTC)
        except ValueError:
            raise CliError(f"--month: expected YYYY-MM, got {args.month!r}", code=2) from None
        return UsageQuery("month", month_of(month), key_id=args.key, by_model=args.by_model)
    return UsageQuery("month", month_of(_now()), key_id=args.key, by_model=args.by_model)


def _prices(settings: Settings) -> dict[str, tuple[float, float]]:
    from .catalog import read_source

    prices: dict[str, tuple[float, float]] = {}
    try:
        source = read_source(settings.models)
    except Exception:  # a broken catalog must not hide the usage report
        return prices
    for name, spec in source.items():
        price = spec.get("price_per_million_tokens") if isinstance(spec, dict) else None
        if isinstance(price, dict) and {"input", "output"} <= set(price):
            try:
                prices[name] = (float(price["input"]), float(price["output"]))
            except (TypeError, ValueError):
                continue
    return prices


def _cost(rows: list[UsageRow], prices: dict[str, tuple[float, float]]) -> float | None:
    """The cost of per-model rows, or None when any of their models has no price."""
    total = 0.0
    for row in rows:
        if row.model not in prices:
            return None
        price_in, price_out = prices[row.model]
        total += (row.prompt_tokens * price_in + row.completion_tokens * price_out) / 1_000_000
    return round(total, 6)


def usage_report(store: Store, query: UsageQuery, settings: Settings) -> list[dict[str, Any]]:
    prices = _prices(settings)
    per_model = store.usage(replace(query, by_model=True)) if prices or query.by_model else []
    rows = per_model if query.by_model else store.usage(query)
    report: list[dict[str, Any]] = []
    for row in rows:
        item: dict[str, Any] = {
            "key_id": row.key_id,
            "period": row.period,
            "requests": row.requests,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens,
        }
        if query.by_model:
            item["model"] = row.model
            cost = _cost([row], prices)
        else:
            cost = _cost([r for r in per_model if r.key_id == row.key_id], prices) if prices else None
        if cost is not None:
            item["cost"] = cost
        report.append(item)
    return report


def cmd_usage(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    if args.key is not None:
        _key_id(args.key)
    query = _period(args)
    report = usage_report(store, query, settings)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    columns = ["key_id", "period", *(["model"] if query.by_model else [])]
    columns += ["requests", "prompt_tokens", "completion_tokens", "total_tokens"]
    if any("cost" in r for r in report):
        columns.append("cost")
    if not report:
        print(f"No usage for {query.value}" + (f" by key {query.key_id}." if query.key_id else "."))
        return 0
    _table([c.upper() for c in columns], [[str(r.get(c, "-")) for c in columns] for r in report])
    return 0


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    for line in [headers, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip())


# tables ---------------------------------------------------------------------------------


def cmd_tables_create(args: argparse.Namespace) -> int:
    from .store.dynamodb import create_tables, make_client

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


def _with_store(command: StoreCommand) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        settings = Settings.from_env()
        store = open_store(args, settings)
        try:
            return command(args, store, settings)
        finally:
            store.close()

    return run


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
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
            print(f"chatgw: {exc.message}", file=sys.stderr)
            return 1

    return run


def _leaf(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    command: StoreCommand,
    *,
    key_id: bool = True,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    if key_id:
        parser.add_argument("key_id", metavar="ID", help="the key's id (cgw_<id>_...)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_store_options(parser)
    parser.set_defaults(func=_guarded(_with_store(command)))
    return parser


def _limit_options(parser: argparse.ArgumentParser, kind: Callable[[str], Any]) -> None:
    parser.add_argument("--rpm", type=kind, default=None, help="requests per minute")
    parser.add_argument("--tpm", type=kind, default=None, help="tokens per minute")
    parser.add_argument("--monthly-tokens", type=kind, default=None, help="monthly token budget")
    parser.add_argument("--max-tokens", type=kind, default=None, help="max tokens per request")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="create and manage API keys", description="Manage API keys.")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = _leaf(ksub, "create", "create a key and print it, once", cmd_keys_create, key_id=False)
    create.add_argument("--name", required=True)
    create.add_argument("--owner", default=None)
    create.add_argument("--models", nargs="+", metavar="PATTERN", help="allowed models, glob patterns (default *)")
    create.add_argument("--no-streaming", action="store_true", help="refuse stream: true")
    _limit_options(create, _positive)
    create.add_argument("--expires", default=None, help="ISO 8601 date/time, or 30d / 12h / 45m from now")
    create.add_argument("--tag", action="append", metavar="K=V")

    _leaf(ksub, "list", "list keys", cmd_keys_list, key_id=False)
    _leaf(ksub, "show", "show one key", cmd_keys_show)
    update = _leaf(ksub, "update", "change a key (limits: a number, or 'none' to remove)", cmd_keys_update)
    update.add_argument("--name", default=None)
    update.add_argument("--owner", default=None, help="'' to remove")
    update.add_argument("--models", nargs="+", metavar="PATTERN")
    streaming = update.add_mutually_exclusive_group()
    streaming.add_argument("--streaming", dest="streaming", action="store_true", default=None)
    streaming.add_argument("--no-streaming", dest="streaming", action="store_false")
    _limit_options(update, _limit_or_clear)
    update.add_argument("--expires", default=None, help="ISO 8601, 30d / 12h / 45m from now, or 'never'")
    update.add_argument("--tag", action="append", metavar="K=V")
    update.add_argument("--untag", action="append", metavar="K")
    _leaf(ksub, "disable", "refuse every request of a key (within the key cache time)", _set_enabled(False))
    _leaf(ksub, "enable", "enable a disabled key", _set_enabled(True))
    _leaf(ksub, "rotate", "give a key a new secret; the old one stops working", cmd_keys_rotate)
    _leaf(ksub, "delete", "delete a key (its usage is kept)", cmd_keys_delete)

    usage = subparsers.add_parser("usage", help="token usage per key", description="Token usage per key.")
    usage.add_argument("--key", default=None, metavar="ID")
    period = usage.add_mutually_exclusive_group()
    period.add_argument("--month", default=None, metavar="YYYY-MM", help="default: this month (UTC)")
    period.add_argument("--day", default=None, metavar="YYYY-MM-DD")
    usage.add_argument("--by-model", action="store_true")
    usage.add_argument("--json", action="store_true")
    add_store_options(usage)
    usage.set_defaults(func=_guarded(_with_store(cmd_usage)))

    tables = subparsers.add_parser("tables", help="DynamoDB tables", description="DynamoDB tables.")
    tsub = tables.add_subparsers(dest="tables_command", required=True, metavar="COMMAND")
    tcreate = tsub.add_parser("create", help="create the keys and usage tables as the template does")
    tcreate.add_argument("--keys-table", default=None, help=f"default CHATGW_KEYS_TABLE or {DEFAULT_KEYS_TABLE}")
    tcreate.add_argument("--usage-table", default=None, help=f"default CHATGW_USAGE_TABLE or {DEFAULT_USAGE_TABLE}")
    tcreate.add_argument("--region", default=None)
    tcreate.set_defaults(func=_guarded(cmd_tables_create))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="chatgw", description=__doc__)
    register(root.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
