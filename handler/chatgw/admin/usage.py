"""`chatgw usage` (the aggregates, with cost where the catalog has prices) and `chatgw replay`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ..limits import day_of, month_of
from ..settings import Settings
from ..store.base import Store, UsageQuery, UsageRow
from . import report as range_report
from .common import CliError, key_id_arg, now, print_table

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


def _prices(settings: Settings) -> dict[str, tuple[float, float]]:
    from ..catalog import read_source

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
    from ..store.codec import event_from_dict

    recorded = duplicates = 0
    for name in args.files:
        stream = sys.stdin if name == "-" else open(name, encoding="utf-8")  # noqa: SIM115
        with stream:
            for number, line in enumerate(stream, 1):
                start = line.find("{")
                if start < 0 or '"usage_event"' not in line:
                    continue
                try:
                    data = json.loads(line[start:])
                    event = event_from_dict(data["usage_event"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise CliError(f"{name}:{number}: not a usage_event line ({exc})") from None
                if store.record_usage(event):
                    recorded += 1
                else:
                    duplicates += 1
    result = {"recorded": recorded, "already_recorded": duplicates}
    print(json.dumps(result) if args.json else f"recorded {recorded} events, {duplicates} already recorded")
    return 0
