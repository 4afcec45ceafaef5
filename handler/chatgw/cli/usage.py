"""`chatgw usage` (the aggregates, with the costs stored when each event was written) and `chatgw replay`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from chatgw.access.limits import day_of, month_of
from chatgw.cli import report as range_report
from chatgw.cli.common import CliError, key_id_arg, now, print_table
from chatgw.settings import Settings
from chatgw.store.base import Store, UsageQuery

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
    return UsageQuery("month", month_of(now()), key_id=args.key, by_model=args.by_model)


def usage_report(store: Store, query: UsageQuery, settings: Settings) -> list[dict[str, Any]]:
    """The aggregates as report rows. `cost` is the sum of the costs stored with the events (each
    priced by its served model when it was written), so a later price change never moves a past
    period; a row has no `cost` when none of its events had a price."""
    report: list[dict[str, Any]] = []
    for row in store.usage(query):
        item: dict[str, Any] = {
            "key_id": row.key_id,
            "period": row.period,
            "requests": row.requests,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens,
            "cached_tokens": row.cached_tokens,
            "cache_write_tokens": row.cache_write_tokens,
            "reasoning_tokens": row.reasoning_tokens,
        }
        if query.by_model:
            item["model"] = row.model
        if row.cost is not None:
            item["cost"] = round(row.cost, 9)
        report.append(item)
    return report


def cmd_usage(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    if args.key is not None:
        key_id_arg(args.key)
    if range_report.wants_report(args):  # names, owners, totals, ranges, groups, CSV, HTML (report.py)
        return range_report.cmd_report(args, store)
    query = _period(args)
    report = usage_report(store, query, settings)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    columns = ["key_id", "period", *(["model"] if query.by_model else [])]
    columns += ["requests", "prompt_tokens", "completion_tokens", "total_tokens"]
    columns += [c for c in ("cached_tokens", "cache_write_tokens", "reasoning_tokens") if any(r[c] for r in report)]
    if any("cost" in r for r in report):
        columns.append("cost")
    if not report:
        print(f"No usage for {query.value}" + (f" by key {query.key_id}." if query.key_id else "."))
        return 0

    def cell(value: object) -> str:
        return f"{value:.6f}" if isinstance(value, float) else str(value)

    print_table([c.upper() for c in columns], [[cell(r.get(c, "-")) for c in columns] for r in report])
    return 0


def cmd_replay(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    """Record the `usage_event` log lines of files ("-" for stdin); safe to run twice."""
    from chatgw.store.replay import NotAUsageEvent, Replayed, replay, usage_event_of

    result = Replayed()
    for name in args.files:
        stream = sys.stdin if name == "-" else open(name, encoding="utf-8")  # noqa: SIM115
        with stream:
            for number, line in enumerate(stream, 1):
                try:
                    event = usage_event_of(line)
                except NotAUsageEvent as exc:
                    raise CliError(f"{name}:{number}: not a usage_event line ({exc})") from None
                if event is not None:
                    replay(store, [event], into=result)
    recorded, duplicates = result.recorded, result.already_recorded
    summary = {"recorded": recorded, "already_recorded": duplicates}
    print(json.dumps(summary) if args.json else f"recorded {recorded} events, {duplicates} already recorded")
    return 0
