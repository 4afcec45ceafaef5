"""`chatgw usage` (the aggregates, with the costs stored when each event was written) and `chatgw replay`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from chatgw.access.limits import day_of, month_of
from chatgw.cli import report as range_report
from chatgw.cli.common import CliError, Subparsers, key_id_arg, now, print_table
from chatgw.cli.stores import add_store_options, with_store
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
            item["door"] = row.door
        if row.cost is not None:
            item["cost"] = round(row.cost, 9)
        report.append(item)
    return report


def cmd_usage(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    if args.key is not None:
        key_id_arg(args.key)
    if wants_report(args):  # names, owners, totals, ranges, groups, CSV, HTML (report.py)
        return cmd_report(args, store)
    query = _period(args)
    report = usage_report(store, query, settings)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    columns = ["key_id", "period", *(["model", "door"] if query.by_model else [])]
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


# the range report -------------------------------------------------------------------------


def wants_report(args: argparse.Namespace) -> bool:
    """Everything but the ledger's own rows (`--json` alone, `--by-model`) goes through the report."""
    if args.by_model:
        return False
    return not args.json or any(getattr(args, n, None) for n in ("start", "end", "by", "csv", "html"))


def cmd_report(args: argparse.Namespace, store: Store) -> int:
    by = args.by or "key"
    if by not in ("key", "owner", "model", "door", "day") and not (by.startswith("tag:") and len(by) > 4):
        raise CliError(f"--by: key, owner, tag:NAME, model, door or day, not {by!r}", code=2)
    start, end, queries = _range(args)
    if by == "day" and queries[0].period == "month":  # a month's own aggregate has no days: read each day's
        queries = day_queries(start, end, args.key)
    usage = range_report.collect(store, queries)
    keys = {k.key_id: k for k in store.list_keys()}
    rows = range_report.summarize(usage, keys, by)
    if args.html:
        from chatgw.cli.report_html import render

        daily = usage if queries[0].period == "day" else range_report.collect(store, day_queries(start, end, args.key))
        try:
            Path(args.html).write_text(render(daily, rows, keys, start, end), encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror}", code=1) from None
        print(f"wrote {args.html}: {len(rows) - 1} {by} row(s), {start} to {end}")
    elif args.csv:
        sys.stdout.write(range_report.to_csv(rows))
    elif args.json:
        print(json.dumps(rows, indent=2))
    elif len(rows) == 1:
        print(f"No usage from {start} to {end}" + (f" by key {args.key}." if args.key else "."))
    else:
        columns = range_report.columns_of(rows)
        print_table([c.upper() for c in columns], [[range_report.cell(r.get(c)) for c in columns] for r in rows])
    return 0


def day_queries(start: date, end: date, key_id: str | None) -> list[UsageQuery]:
    return [UsageQuery("day", d.isoformat(), key_id=key_id, by_model=True) for d in range_report.days(start, end)]


def _range(args: argparse.Namespace) -> tuple[date, date, list[UsageQuery]]:
    """--from/--to (days), --day, or --month (default: this month): the first and last day, and
    the aggregates to read (a month's own aggregate when a whole month is asked)."""
    if args.start or args.end:
        today = now().date()
        start = range_report.parse_day(args.start, "--from") if args.start else today.replace(day=1)
        end = range_report.parse_day(args.end, "--to") if args.end else today
        return start, end, day_queries(start, end, args.key)
    if args.day:
        day = range_report.parse_day(args.day, "--day")
        return day, day, day_queries(day, day, args.key)
    month = args.month or now().strftime("%Y-%m")
    try:
        first = date.fromisoformat(f"{month}-01")
    except ValueError:
        raise CliError(f"--month: expected YYYY-MM, got {month!r}", code=2) from None
    last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return first, last, [UsageQuery("month", month, key_id=args.key, by_model=True)]


# replay ---------------------------------------------------------------------------------


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


def register(subparsers: Subparsers) -> None:
    usage = subparsers.add_parser("usage", help="token usage per key", description="Token usage per key.")
    usage.add_argument("--key", default=None, metavar="ID")
    period = usage.add_mutually_exclusive_group()
    period.add_argument("--month", default=None, metavar="YYYY-MM", help="default: this month (UTC)")
    period.add_argument("--day", default=None, metavar="YYYY-MM-DD")
    period.add_argument("--from", dest="start", default=None, metavar="YYYY-MM-DD", help="first day (UTC)")
    usage.add_argument("--to", dest="end", default=None, metavar="YYYY-MM-DD", help="last day (default: today)")
    usage.add_argument("--by", default=None, metavar="GROUP", help="key (default), owner, tag:NAME, model, door or day")
    usage.add_argument("--by-model", action="store_true", help="the ledger's rows per key and served model")
    usage.add_argument("--json", action="store_true")
    usage.add_argument("--csv", action="store_true", help="the report as CSV")
    usage.add_argument("--html", default=None, metavar="FILE", help="write a self-contained HTML page with charts")
    add_store_options(usage)
    usage.set_defaults(func=with_store(cmd_usage, read_only=True))

    replay = subparsers.add_parser(
        "replay",
        help="record usage events from log lines",
        description="Record the `usage_event` log lines the gateway wrote when the store failed (idempotent).",
    )
    replay.add_argument("files", nargs="+", metavar="LOGFILE", help="log files, '-' for stdin")
    replay.add_argument("--json", action="store_true")
    add_store_options(replay)
    replay.set_defaults(func=with_store(cmd_replay))
