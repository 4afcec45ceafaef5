"""`chatgw keys create|list|show|update|disable|enable|rotate|delete`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from chatgw.access.keys import KeyRecord, Limits, format_key, hash_secret, new_key, new_secret
from chatgw.cli.common import CliError, Subparsers, key_id_arg, now, print_table
from chatgw.cli.peppers import peppers_for_new_keys
from chatgw.cli.stores import store_command
from chatgw.settings import Settings
from chatgw.store.base import KeyExists, KeyNotFound, Reshards, Store

CLEAR = "none"
NO_SHARDS = "--shards: the SQLite store keeps one counter per key (shards are for DynamoDB hot keys); nothing changed"
LIMIT_FLAGS = {
    "rpm": "requests_per_minute",
    "tpm": "tokens_per_minute",
    "monthly_tokens": "monthly_token_budget",
    "max_tokens": "max_tokens_per_request",
    "shards": "shards",
    "max_concurrent": "max_concurrent",
}

# argument types -------------------------------------------------------------------------


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def limit_or_clear(text: str) -> int | str:
    return CLEAR if text.lower() == CLEAR else positive(text)


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


def _get(store: Store, key_id: str) -> KeyRecord:
    record = store.get_key(key_id_arg(key_id))
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
    short["shards"] = "shards"
    short["max_concurrent"] = "concurrent"
    short["shard_epoch"] = "epoch"
    return " ".join(f"{short[k]}={v}" for k, v in limits.to_dict().items()) or "-"


def cmd_keys_create(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    now = datetime.now(UTC)
    limits = Limits(**{LIMIT_FLAGS[f]: getattr(args, f) for f in LIMIT_FLAGS if getattr(args, f) is not None})
    if limits.shards is not None and not _has_shards(store):
        raise CliError(NO_SHARDS, 2)
    pepper, stamp = peppers_for_new_keys(args, settings).for_new_key()
    key, record = new_key(
        args.name,
        pepper=pepper,
        **stamp,
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
    _warn_if_expired(record, now)
    return 0


def _warn_if_expired(record: KeyRecord, at: datetime) -> None:
    if _expired(record, at):
        assert record.expires_at is not None
        when = record.expires_at.isoformat(timespec="minutes")
        print(
            f"chatgw: warning: key {record.key_id} expired already ({when}): it is refused with a 403", file=sys.stderr
        )


def _expired(record: KeyRecord, at: datetime) -> bool:
    return record.expires_at is not None and record.expires_at <= at


def cmd_keys_list(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    records = store.list_keys()
    at = now()
    if args.json:
        print(json.dumps([{**r.public_dict(), "expired": _expired(r, at)} for r in records], indent=2))
        return 0
    rows = [
        [
            r.key_id,
            r.name,
            r.owner or "-",
            "expired" if _expired(r, at) else "yes" if r.enabled else "no",
            r.expires_at.isoformat(timespec="minutes") if r.expires_at else "-",
            ",".join(r.allowed_models),
            _limits_text(r.limits),
        ]
        for r in records
    ]
    print_table(["KEY_ID", "NAME", "OWNER", "ENABLED", "EXPIRES", "MODELS", "LIMITS"], rows)
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
        changes["expires_at"] = None if args.expires.lower() == "never" else parse_expiry(args.expires, now())
    limits = record.limits.to_dict()
    for flag, name in LIMIT_FLAGS.items():
        value = getattr(args, flag)
        if value == CLEAR:
            limits.pop(name, None)
        elif value is not None:
            limits[name] = value
    changes["limits"] = Limits(**limits)
    if args.shards is not None and not _has_shards(store):
        raise CliError(NO_SHARDS, 2)
    tags = {**record.tags, **_tags(args.tag or [])}
    for name in args.untag or []:
        tags.pop(name, None)
    changes["tags"] = tags
    updated = _save_limits(store, record, record.with_changes(**changes))
    _print_record(updated, args.json)
    _warn_if_expired(updated, now())
    if not args.json:
        print(UPDATE_NOTE, file=sys.stderr)
    return 0


def _has_shards(store: Store) -> bool:
    return isinstance(store, Reshards)


def _save_limits(store: Store, record: KeyRecord, updated: KeyRecord) -> KeyRecord:
    """Save; on DynamoDB a change of the shard count moves the key's counters to the new layout first
    (store/dynamodb/reshard.py), so that the limits stay exact through the change."""
    if not isinstance(store, Reshards) or updated.limits.shards == record.limits.shards:
        _save(store, updated)
        return updated
    from chatgw.store.dynamodb.reshard import ReshardConflict

    try:
        saved = store.reshard(record, updated, now())
    except ReshardConflict as exc:
        raise CliError(str(exc)) from None
    except KeyNotFound:
        raise CliError(f"no such key: {record.key_id}") from None
    return saved


UPDATE_NOTE = "Running gateways apply the change once their key cache expires (CHATGW_KEY_CACHE_SECONDS, default 30 s)."
REVOCATION_NOTE = (
    "Running gateways stop accepting this key once their key cache expires (CHATGW_KEY_CACHE_SECONDS, default 30 s)."
)


def set_enabled(enabled: bool) -> Callable[[argparse.Namespace, Store, Settings], int]:
    def command(args: argparse.Namespace, store: Store, settings: Settings) -> int:
        updated = _get(store, args.key_id).with_changes(enabled=enabled)
        _save(store, updated)
        _print_record(updated, args.json)
        if not args.json:  # an enabled key is refused by gateways that cached it disabled, for as long
            print(REVOCATION_NOTE if not enabled else UPDATE_NOTE, file=sys.stderr)
        return 0

    return command


def cmd_keys_rotate(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    record = _get(store, args.key_id)
    secret = new_secret()
    pepper, stamp = peppers_for_new_keys(args, settings).for_new_key()
    _save(store, record.with_changes(secret_hash=hash_secret(secret, pepper), **stamp))
    key = format_key(record.key_id, secret)
    if args.json:
        print(json.dumps({"key": key, **record.public_dict()}, indent=2))
    else:
        print(
            f"Rotated key {record.key_id}. Running gateways refuse the old secret once their key cache expires "
            f"(CHATGW_KEY_CACHE_SECONDS, default 30 s). The new key, shown this once:"
        )
        print(f"\n    {key}\n")
    return 0


def cmd_keys_delete(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    if not store.delete_key(key_id_arg(args.key_id)):
        raise CliError(f"no such key: {args.key_id}")
    print(json.dumps({"key_id": args.key_id, "deleted": True}) if args.json else f"Deleted key {args.key_id}.")
    if not args.json:
        print(REVOCATION_NOTE, file=sys.stderr)
    return 0


# the commands -----------------------------------------------------------------------------


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


def register(subparsers: Subparsers) -> None:
    keys = subparsers.add_parser("keys", help="create and manage API keys", description="Manage API keys.")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = store_command(ksub, "create", "create a key and print it, once", cmd_keys_create, key_id=False)
    create.add_argument("--name", required=True)
    create.add_argument("--owner", default=None)
    create.add_argument("--models", nargs="+", metavar="PATTERN", help="allowed models, glob patterns (default *)")
    create.add_argument("--no-streaming", action="store_true", help="refuse stream: true")
    _limit_options(create, positive)
    create.add_argument("--expires", default=None, help="ISO 8601 date/time, or 30d / 12h / 45m from now")
    create.add_argument("--tag", action="append", metavar="K=V")

    store_command(ksub, "list", "list keys", cmd_keys_list, key_id=False, read_only=True)
    store_command(ksub, "show", "show one key", cmd_keys_show, read_only=True)
    update = store_command(ksub, "update", "change a key (limits: a number, or 'none' to remove)", cmd_keys_update)
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
    store_command(ksub, "disable", "refuse every request of a key (within the key cache time)", set_enabled(False))
    store_command(ksub, "enable", "enable a disabled key", set_enabled(True))
    store_command(ksub, "rotate", "give a key a new secret; the old one stops working", cmd_keys_rotate)
    store_command(ksub, "delete", "delete a key (its usage is kept)", cmd_keys_delete)
