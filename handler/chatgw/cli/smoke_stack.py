"""`chatgw smoke --stack NAME`: the stack's URL, a temporary key in its table, and the ledger's word."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import httpx

from chatgw.access.keys import new_key, parse_key
from chatgw.cli.common import CliError
from chatgw.cli.peppers import peppers_for_new_keys
from chatgw.cli.smoke_checks import Check, Smoke
from chatgw.cli.smoke_init import init_check
from chatgw.cli.stack import outputs
from chatgw.cli.stores import open_store
from chatgw.settings import Settings

LEDGER_WAIT_S = 20.0
"""How long the usage events may take to appear (they are written after each answer)."""


def run_on_stack(args: argparse.Namespace, client: httpx.Client) -> list[Check]:
    base = outputs(args.stack, args.region).get("OpenAIBaseUrl")
    if not base:
        raise CliError(f"stack {args.stack!r} has no OpenAIBaseUrl output")
    settings = Settings.from_env()
    store = open_store(args, settings)
    made = None
    try:
        key = args.key
        if key is None:
            pepper, stamp = peppers_for_new_keys(args, settings).for_new_key()
            key, made = new_key(
                "chatgw smoke",
                pepper=pepper,
                **stamp,
                owner="chatgw smoke",
                expires_at=datetime.now(UTC) + timedelta(hours=1),
                tags={"purpose": "smoke"},
            )
            store.create_key(made)
        key_id = parse_key(key)[0]
        before = len(store.usage_events(key_id))
        smoke = Smoke(base, key, args.model, client)
        checks = smoke.run()
        deadline = time.monotonic() + LEDGER_WAIT_S
        recorded = len(store.usage_events(key_id)) - before
        while recorded < smoke.calls and time.monotonic() < deadline:
            time.sleep(0.5)
            recorded = len(store.usage_events(key_id)) - before
        ok = smoke.calls > 0 and recorded >= smoke.calls
        checks.append(Check("usage ledger recorded the calls", ok, f"{recorded} event(s) for {smoke.calls} call(s)"))
        checks.append(init_check(args.stack, args.region, datetime.now(UTC)))
        return checks
    finally:
        if made is not None:
            store.delete_key(made.key_id)
        store.close()
