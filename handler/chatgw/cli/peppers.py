"""`chatgw pepper status|rotate`, and the peppers the other commands hash keys with.

The CLI finds the peppers as it finds the store: `--pepper-secret ARN`, else `--stack NAME` (its
`PepperSecretArn` output), else CHATGW_PEPPER_SECRET, else the state folder's `pepper.json` (SQLite);
on DynamoDB with no secret, the legacy CHATGW_KEY_PEPPER alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from chatgw.access.peppers import LEGACY, LegacySource, Peppers, Source, fingerprint, source_for
from chatgw.cli.common import Subparsers, print_table
from chatgw.cli.stores import store_command
from chatgw.settings import Settings
from chatgw.store.base import Store

PEPPER_OUTPUT = "PepperSecretArn"


def stack_pepper_secret(stack: str, region: str | None) -> str | None:
    """The stack's `PepperSecretArn` output, None for a stack deployed before it existed."""
    from chatgw.cli.stack import outputs

    return outputs(stack, region).get(PEPPER_OUTPUT) or None


def pepper_source(args: argparse.Namespace, settings: Settings, *, create: bool) -> Source:
    secret = getattr(args, "pepper_secret", None)
    stack, region = getattr(args, "stack", None), getattr(args, "region", None)
    state_dir = getattr(args, "state_dir", None)
    if not secret and stack:
        secret = stack_pepper_secret(stack, region)
        if secret is None:
            print(f"chatgw: stack {stack!r} has no {PEPPER_OUTPUT} output: keys use CHATGW_KEY_PEPPER", file=sys.stderr)
            return LegacySource(settings.pepper)
    if secret:
        return source_for(replace(settings, pepper_secret=secret), create=create)
    if state_dir:
        return source_for(
            replace(settings, state_dir=Path(state_dir), keys_table=None, usage_table=None), create=create
        )
    if getattr(args, "keys_table", None):
        settings = replace(settings, keys_table=args.keys_table, usage_table=args.usage_table)
    return source_for(settings, create=create)


def peppers_for_new_keys(args: argparse.Namespace, settings: Settings) -> Peppers:
    """What `keys create` and `keys rotate` hash with: the current version (the file is made if missing)."""
    return pepper_source(args, settings, create=True).load()


def cmd_pepper_status(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    source = pepper_source(args, settings, create=False)
    peppers = source.load()
    records = store.list_keys()
    counts = Counter(r.pepper_version or LEGACY for r in records)
    prints = {v: fingerprint(p) for v, p in peppers.versions.items()}
    foreign = Counter(
        r.pepper_version for r in records if r.pepper_id and r.pepper_id != prints.get(r.pepper_version or "")
    )
    known = {LEGACY, *peppers.versions}
    versions = sorted({*peppers.versions, *counts}, key=_order)
    rows: list[dict[str, Any]] = [
        {
            "version": v,
            "keys": counts.get(v, 0),
            "current": v == (peppers.current or LEGACY),
            "known": v in known,
            "other_pepper": foreign.get(v, 0),
        }
        for v in versions
    ]
    if not any(r["version"] == LEGACY for r in rows):
        rows.insert(0, {"version": LEGACY, "keys": 0, "current": peppers.current is None, "known": True})
        rows[0]["other_pepper"] = 0
    if args.json:
        print(json.dumps({"source": source.label, "current": peppers.current or LEGACY, "versions": rows}, indent=2))
    else:
        print(f"peppers: {source.label}; new keys use {peppers.current or LEGACY}")
        table = [[r["version"], str(r["keys"]), "yes" if r["current"] else "", _problem(r)] for r in rows]
        print_table(["VERSION", "KEYS", "CURRENT", "PROBLEM"], table)
    missing = [r["version"] for r in rows if not r["known"] and r["keys"]]
    if missing:
        print(
            f"chatgw: keys of pepper version {', '.join(missing)} cannot authenticate: the source lacks it",
            file=sys.stderr,
        )
        return 1
    if sum(foreign.values()):
        print(
            f"chatgw: {sum(foreign.values())} key(s) were made with another pepper of the same version "
            "(another --pepper-secret or state folder): they cannot authenticate here",
            file=sys.stderr,
        )
        return 1
    return 0


def _problem(row: dict[str, Any]) -> str:
    if not row["known"]:
        return "MISSING"
    return f"{row['other_pepper']} made with another pepper" if row["other_pepper"] else ""


def cmd_pepper_rotate(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    source = pepper_source(args, settings, create=True)
    new = source.rotate()  # under a lock: a rotation running beside it adds its own version too
    waiting = sum(1 for r in store.list_keys() if r.pepper_version != new.current)
    if args.json:
        print(json.dumps({"source": source.label, "current": new.current, "keys_on_older_versions": waiting}))
    else:
        print(
            f"Pepper {new.current} added to {source.label} and made current: "
            "new keys and `chatgw keys rotate` use it.\n"
            f"{waiting} existing key(s) keep their older version and keep working. Running gateways read "
            f"{new.current} when they first see a key of it."
        )
    return 0


def _order(version: str) -> tuple[int, str]:
    return (0, "") if version == LEGACY else (1, version.rjust(8))


def register(subparsers: Subparsers) -> None:
    pepper = subparsers.add_parser(
        "pepper", help="the versioned key peppers", description="The versioned peppers mixed into key hashes."
    )
    psub = pepper.add_subparsers(dest="pepper_command", required=True, metavar="COMMAND")
    store_command(
        psub,
        "status",
        "the pepper source, its versions, and how many keys use each",
        cmd_pepper_status,
        key_id=False,
        read_only=True,
    )
    store_command(psub, "rotate", "add a pepper version that new and rotated keys use", cmd_pepper_rotate, key_id=False)
