"""The usage report of `chatgw usage`: a range of days read from the day aggregates (per key and
served model and door), grouped by key (with its name and owner), owner, a tag, model, door or day, with a
totals row. usage.py prints it as a table, CSV or JSON, or writes a self-contained HTML page (report_html.py)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from chatgw.access.keys import KeyRecord
from chatgw.cli.common import CliError
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
    door: str = "chat"

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
                    door=row.door or "chat",
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
    if by == "door":
        return item.door
    raise CliError(f"--by: key, owner, tag:NAME, model, door or day, not {by!r}", code=2)


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
