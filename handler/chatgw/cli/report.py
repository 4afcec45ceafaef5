"""The usage report of `chatgw usage`: a range of days read from the day aggregates (per key and
served model), grouped by key (with its name and owner), owner, a tag, model or day, with a
totals row; printed as a table, CSV, JSON, or a self-contained HTML page (report_html.py)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from chatgw.access.keys import KeyRecord
from chatgw.cli.common import CliError, now, print_table
from chatgw.store.base import Store, UsageQuery

MAX_DAYS = 366
NONE = "(none)"
TOTAL = "TOTAL"


@dataclass(frozen=True, slots=True)
class DayUsage:
    """One key's use of one served model on one day (UTC)."""

    day: str
    key_id: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cost: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def parse_day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option}: expected YYYY-MM-DD, got {text!r}", code=2) from None


def days(start: date, end: date) -> list[date]:
    if end < start:
        raise CliError(f"--to {end} is before --from {start}", code=2)
    count = (end - start).days + 1
    if count > MAX_DAYS:
        raise CliError(f"the range is {count} days; at most {MAX_DAYS}", code=2)
    return [start + timedelta(days=i) for i in range(count)]


def collect(store: Store, queries: list[UsageQuery]) -> list[DayUsage]:
    """The per-model aggregates the queries name (one store read each)."""
    found: list[DayUsage] = []
    for query in queries:
        for row in store.usage(query):
            found.append(
                DayUsage(
                    day=row.period,
                    key_id=row.key_id,
                    model=row.model or NONE,
                    requests=row.requests,
                    prompt_tokens=row.prompt_tokens,
                    completion_tokens=row.completion_tokens,
                    cached_tokens=row.cached_tokens,
                    cost=row.cost,
                )
            )
    return found


def group_of(item: DayUsage, by: str, keys: dict[str, KeyRecord]) -> str:
    record = keys.get(item.key_id)
    if by == "key":
        return item.key_id
    if by == "owner":
        return (record.owner if record else None) or NONE
    if by.startswith("tag:"):
        return (record.tags.get(by[4:]) if record else None) or NONE
    if by == "model":
        return item.model
    if by == "day":
        return item.day
    raise CliError(f"--by: key, owner, tag:NAME, model or day, not {by!r}", code=2)


def summarize(usage: Iterable[DayUsage], keys: dict[str, KeyRecord], by: str = "key") -> list[dict[str, Any]]:
    """One row per group (sorted), then the totals row. Rows by key carry the key's name and owner."""
    groups: dict[str, list[DayUsage]] = {}
    for item in usage:
        groups.setdefault(group_of(item, by, keys), []).append(item)
    rows = [_row(by, name, items, keys) for name, items in sorted(groups.items())]
    rows.append(_row(by, TOTAL, [i for items in groups.values() for i in items], keys))
    return rows


def _row(by: str, name: str, items: list[DayUsage], keys: dict[str, KeyRecord]) -> dict[str, Any]:
    column = "key_id" if by == "key" else by
    row: dict[str, Any] = {column: name}
    if by == "key":
        record = keys.get(name)
        if name == TOTAL:
            row |= {"name": "", "owner": ""}
        else:
            row |= {"name": record.name if record else "(deleted)", "owner": (record.owner if record else "") or ""}
    costs = [i.cost for i in items if i.cost is not None]
    row |= {
        "requests": sum(i.requests for i in items),
        "prompt_tokens": sum(i.prompt_tokens for i in items),
        "completion_tokens": sum(i.completion_tokens for i in items),
        "total_tokens": sum(i.total_tokens for i in items),
        "cached_tokens": sum(i.cached_tokens for i in items),
        "cost": round(sum(costs), 6) if costs else None,
    }
    return row


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(rows[0]) if rows else []
    if not any(r.get("cached_tokens") for r in rows):
        columns.remove("cached_tokens")
    if all(r.get("cost") is None for r in rows):
        columns.remove("cost")
    return columns


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.6f}" if isinstance(value, float) else str(value)


# the command ------------------------------------------------------------------------------


def wants_report(args: argparse.Namespace) -> bool:
    """Everything but the ledger's own rows (`--json` alone, `--by-model`) goes through the report."""
    if args.by_model:
        return False
    return not args.json or any(getattr(args, n, None) for n in ("start", "end", "by", "csv", "html"))


def cmd_report(args: argparse.Namespace, store: Store) -> int:
    by = args.by or "key"
    if by not in ("key", "owner", "model", "day") and not (by.startswith("tag:") and len(by) > 4):
        raise CliError(f"--by: key, owner, tag:NAME, model or day, not {by!r}", code=2)
    start, end, queries = _range(args)
    if by == "day" and queries[0].period == "month":  # a month's own aggregate has no days: read each day's
        queries = day_queries(start, end, args.key)
    usage = collect(store, queries)
    keys = {k.key_id: k for k in store.list_keys()}
    rows = summarize(usage, keys, by)
    if args.html:
        from chatgw.cli.report_html import render

        daily = usage if queries[0].period == "day" else collect(store, day_queries(start, end, args.key))
        try:
            Path(args.html).write_text(render(daily, rows, keys, start, end), encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror}", code=1) from None
        print(f"wrote {args.html}: {len(rows) - 1} {by} row(s), {start} to {end}")
    elif args.csv:
        sys.stdout.write(to_csv(rows))
    elif args.json:
        print(json.dumps(rows, indent=2))
    elif len(rows) == 1:
        print(f"No usage from {start} to {end}" + (f" by key {args.key}." if args.key else "."))
    else:
        columns = columns_of(rows)
        print_table([c.upper() for c in columns], [[cell(r.get(c)) for c in columns] for r in rows])
    return 0


def day_queries(start: date, end: date, key_id: str | None) -> list[UsageQuery]:
    return [UsageQuery("day", d.isoformat(), key_id=key_id, by_model=True) for d in days(start, end)]


def _range(args: argparse.Namespace) -> tuple[date, date, list[UsageQuery]]:
    """--from/--to (days), --day, or --month (default: this month): the first and last day, and
    the aggregates to read (a month's own aggregate when a whole month is asked)."""
    if args.start or args.end:
        today = now().date()
        start = parse_day(args.start, "--from") if args.start else today.replace(day=1)
        end = parse_day(args.end, "--to") if args.end else today
        return start, end, day_queries(start, end, args.key)
    if args.day:
        day = parse_day(args.day, "--day")
        return day, day, day_queries(day, day, args.key)
    month = args.month or now().strftime("%Y-%m")
    try:
        first = date.fromisoformat(f"{month}-01")
    except ValueError:
        raise CliError(f"--month: expected YYYY-MM, got {month!r}", code=2) from None
    last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return first, last, [UsageQuery("month", month, key_id=args.key, by_model=True)]
